/**
 * Judges one HTTP request (forward request or request inside a tunnel) and builds the head that goes
 * upstream. Everything that decides is here; l7-session.ts only moves bytes.
 *
 * Threat: a request that reaches something the policy does not allow — another virtual host (Host ≠
 * CONNECT host), a path the glob misreads, a method the preset forbids, a credential sent where it is
 * not bound, a protocol switch that ends inspection. Assumptions and rules:
 * - each request is judged against the generation current when it arrives (hot reload affects the
 *   next request on a kept-alive connection), with decideConnect first (the host may have been
 *   removed) and then, on inspected endpoints, decideRequest on the canonical path;
 * - the forwarded head is rebuilt from parsed fields: hop-by-hop fields are dropped (never the framing
 *   fields or Host, whatever Connection lists), the target is the canonical path, placeholders are
 *   replaced only for credentials bound to the endpoint;
 * - `enforcement: audit` forwards a request the rules refuse and records it as `audited`; malformed or
 *   misaddressed requests are refused in either mode;
 * - Upgrade: `websocket` only on `protocol: websocket` endpoints (the upgrade GET is judged by the
 *   rules) or uninspected ones; any other upgrade on an inspected endpoint is refused, since the bytes
 *   after `101` could not be inspected.
 */
import { type CredentialScope, substituteHeader, substituteUrlPart } from '../credentials.js';
import { type CanonicalHost, HostNameError, formatAuthority, parseAuthority } from '../net/host-name.js';
import type { RequestHead } from '../http/http-head.js';
import { trimOws } from '../http/http-fields.js';
import { canonicalTarget } from '../http/path-canon.js';
import type { EndpointTreatment } from '../policy-port.js';
import type { ProxyFindingKind } from '../proxy-audit.js';
import type { DenialHint } from './responses.js';
import type { ClientConnection, SessionMode } from '../sandbox-context.js';
import { INTERNAL_PORTS, type InternalHost } from './internal-host.js';

export interface Refusal {
  ok: false;
  status: 400 | 403;
  reason: string;
  host: string;
  port: number;
  /** Which audit class records it: a connection decision (4001) or a request decision (4002). */
  level: 'connect' | 'request';
  method: string;
  path: string;
  policy?: string | undefined;
  generation: number;
  finding?: { kind: ProxyFindingKind; title: string; details?: Record<string, unknown> } | undefined;
  hint?: DenialHint | undefined;
}

export interface Approval {
  ok: true;
  host: CanonicalHost;
  port: number;
  method: string;
  path: string;
  treatment: EndpointTreatment;
  policy?: string | undefined;
  generation: number;
  enforcement: 'enforce' | 'audit';
  /** `audited` when the rules refused but the endpoint only audits. */
  disposition: 'allowed' | 'audited';
  reason?: string | undefined;
  websocket: boolean;
  /** The head to send upstream (latin1 bytes). */
  wire: Buffer;
  /** The request goes to a handler inside Carapace (internal-host.ts), not upstream. */
  internal: InternalHost | null;
}

const DEFAULT_TREATMENT: EndpointTreatment = {
  inspect: false,
  protocol: 'tcp',
  tls: 'terminate',
  allowedIps: [],
  credentials: [],
  hostLocal: false,
  tlsDeclared: false,
};

/** How an internal host's requests are treated: never inspected by policy rules, no credentials. */
const INTERNAL_TREATMENT: EndpointTreatment = { ...DEFAULT_TREATMENT, protocol: 'rest' };

const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authorization',
  'te',
  'trailer',
  'upgrade',
]);
const NEVER_STRIPPED = new Set(['host', 'content-length', 'transfer-encoding']);
const NO_TOKENS: ReadonlySet<string> = new Set();

interface Target {
  host: CanonicalHost;
  port: number;
  pathAndQuery: string;
}

function locate(head: RequestHead, mode: SessionMode): Target | { reason: string; status: 400 | 403 } {
  if (mode.kind === 'tunnel') {
    if (head.targetForm !== 'origin')
      return { status: 400, reason: 'request inside a tunnel must use origin-form (/path)' };
    return { host: mode.host, port: mode.port, pathAndQuery: head.target };
  }
  if (head.targetForm !== 'absolute')
    return { status: 400, reason: 'forward requests must use absolute-form (http://host/path)' };
  const m = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\/([^/?#]*)(.*)$/.exec(head.target);
  if (!m || (m[1] as string).toLowerCase() !== 'http') {
    return { status: 400, reason: 'only http:// URLs can be forwarded; use CONNECT for https' };
  }
  const auth = parseAuthority(m[2] as string, 80);
  let rest = m[3] as string;
  if (rest === '' || rest.startsWith('?')) rest = '/' + rest;
  return { host: auth, port: auth.port, pathAndQuery: rest };
}

function hostHeaderMatches(head: RequestHead, host: CanonicalHost): boolean {
  if (head.host === null) return true;
  // Fast path: the common exact forms (`host`, `host:port`) of an already canonical name.
  const v = head.host;
  if (
    v === host.host ||
    (v.startsWith(host.host) &&
      v.charCodeAt(host.host.length) === 0x3a &&
      /^:[0-9]{1,5}$/.test(v.slice(host.host.length)))
  ) {
    return host.kind !== 'ipv6';
  }
  try {
    return parseAuthority(head.host, 1).host === host.host;
  } catch {
    return false;
  }
}

export function judgeRequest(
  conn: ClientConnection,
  head: RequestHead,
  mode: SessionMode,
): Refusal | Approval {
  const { sb, caller } = conn;
  const pinned = sb.current();
  const generation = pinned.generation;
  const refuse = (r: Omit<Refusal, 'ok' | 'generation' | 'method'>): Refusal => ({
    ok: false,
    generation,
    method: head.method,
    ...r,
  });
  const fallbackHost = mode.kind === 'tunnel' ? mode.host.host : '(unknown)';
  const fallbackPort = mode.kind === 'tunnel' ? mode.port : 0;

  let target: Target | { reason: string; status: 400 | 403 };
  try {
    target = locate(head, mode);
  } catch (err) {
    const reason = err instanceof HostNameError ? err.reason : 'invalid request target';
    return refuse({
      status: 400,
      reason,
      host: fallbackHost,
      port: fallbackPort,
      level: 'request',
      path: '/',
    });
  }
  if ('reason' in target)
    return refuse({ ...target, host: fallbackHost, port: fallbackPort, level: 'request', path: '/' });
  const host = target.host.host;
  const port = target.port;
  if (!hostHeaderMatches(head, target.host)) {
    return refuse({
      status: 403,
      reason: `Host header does not match ${mode.kind === 'tunnel' ? 'the CONNECT host' : 'the request URL'}`,
      host,
      port,
      level: 'request',
      path: '/',
      finding: { kind: 'host-mismatch', title: `Host header differs from ${host}` },
    });
  }
  const canon = canonicalTarget(target.pathAndQuery);
  if (!canon.ok)
    return refuse({ status: 403, reason: canon.reason, host, port, level: 'request', path: '/' });
  const { path, query } = canon;

  const internal = sb.internalHost(host);
  if (internal !== null) {
    // Served inside Carapace: no policy entry, no credentials (the handler strips the agent's).
    const reason = !INTERNAL_PORTS.has(port)
      ? `${host} is served on ports 443 (https) and 80 (http) only`
      : head.upgrade.length > 0
        ? `protocol upgrade to ${head.upgrade.join(', ')} not served by ${host}`
        : null;
    if (reason !== null) return refuse({ status: 403, reason, host, port, level: 'request', path });
    const wire = rebuildHead(head, target, null, false, path, query);
    if (typeof wire !== 'string') throw new Error('unreachable: no substitution without a scope');
    return {
      ok: true,
      host: target.host,
      port,
      method: head.method,
      path,
      treatment: INTERNAL_TREATMENT,
      generation,
      enforcement: 'enforce',
      disposition: 'allowed',
      websocket: false,
      wire: Buffer.from(wire, 'latin1'),
      internal,
    };
  }

  const connect = pinned.policy.decideConnect({
    host,
    port,
    binary: caller.binary,
    ancestors: caller.ancestors,
  });
  if (!connect.allowed) {
    const reason = mode.kind === 'tunnel' ? `no longer allowed: ${connect.reason}` : connect.reason;
    return refuse({
      status: 403,
      reason,
      host,
      port,
      level: mode.kind === 'tunnel' ? 'request' : 'connect',
      path,
      policy: connect.policy,
    });
  }
  const treatment = connect.endpoint ?? DEFAULT_TREATMENT;
  let policy = connect.policy;
  let enforcement = connect.enforcement;
  let disposition: Approval['disposition'] = 'allowed';
  let reason: string | undefined;

  const websocket = head.upgrade.length === 1 && head.upgrade[0] === 'websocket';
  if (head.upgrade.length > 0) {
    const permitted = websocket && (treatment.protocol === 'websocket' || !treatment.inspect);
    if (!permitted) {
      return refuse({
        status: 403,
        reason: `protocol upgrade to ${head.upgrade.join(', ')} not allowed on this endpoint`,
        host,
        port,
        level: 'request',
        path,
        policy,
      });
    }
  }

  if (treatment.inspect) {
    const judge = (p: string) =>
      pinned.policy.decideRequest({
        host,
        port,
        binary: caller.binary,
        ancestors: caller.ancestors,
        method: head.method,
        path: p,
        query,
      });
    let verdict = judge(path);
    // An encoded slash: the server may read it as a separator, so that reading must pass as well.
    if (verdict.allowed && canon.slashReading !== undefined) {
      const decoded = judge(canon.slashReading);
      if (!decoded.allowed)
        verdict = { ...decoded, reason: `read with its %2F as /, ${canon.slashReading}: ${decoded.reason}` };
    }
    policy = verdict.policy ?? policy;
    enforcement = verdict.enforcement;
    if (!verdict.allowed) {
      if (verdict.enforcement === 'enforce') {
        return refuse({ status: 403, reason: verdict.reason, host, port, level: 'request', path, policy });
      }
      disposition = 'audited';
      reason = verdict.reason;
    }
  }

  // Credentials: the scope is what the CURRENT endpoint binds. A request that leaves in clear text
  // (forward `http://`, plain HTTP in a tunnel) must not carry a secret to an endpoint reached over
  // TLS (port 443, or `tls: terminate`/`passthrough`): anyone on the path would read it.
  const cleartext = mode.kind === 'forward' || !mode.tls;
  const scope: CredentialScope = {
    bound: treatment.credentials,
    secrets: sb.credentials(),
    cleartextRefused: cleartext && (port === 443 || treatment.tlsDeclared),
  };
  const credentialRefusal = (name: string, problem: string): Refusal =>
    refuse({
      status: 403,
      reason:
        problem === 'unbound'
          ? `credential ${name} is not bound to ${host}`
          : problem === 'cleartext'
            ? `credential ${name} would travel in clear text to ${formatAuthority(host, port)}, which the policy reaches over TLS`
            : `credential ${name} has no value`,
      host,
      port,
      level: 'request',
      path,
      policy,
      finding: {
        kind:
          problem === 'unbound'
            ? 'unbound-credential'
            : problem === 'cleartext'
              ? 'cleartext-credential'
              : 'unresolved-credential',
        title: `credential placeholder ${name} sent to ${formatAuthority(host, port)}`,
        details: { credential: name },
      },
      hint:
        problem === 'unbound'
          ? { kind: 'credential', name }
          : problem === 'cleartext'
            ? { kind: 'cleartext-credential', name }
            : undefined,
    });
  const p = substituteUrlPart(path, scope);
  if (!p.ok) return credentialRefusal(p.name, p.problem);
  const q = substituteUrlPart(query, scope);
  if (!q.ok) return credentialRefusal(q.name, q.problem);

  const wire = rebuildHead(head, target, scope, websocket, p.value, q.value);
  if (typeof wire !== 'string') return credentialRefusal(wire.name, wire.problem);

  return {
    ok: true,
    host: target.host,
    port,
    method: head.method,
    path,
    treatment,
    policy,
    generation,
    enforcement,
    disposition,
    reason,
    websocket,
    wire: Buffer.from(wire, 'latin1'),
    internal: null,
  };
}

/**
 * The head that goes upstream, rebuilt from parsed fields: hop-by-hop fields dropped (never Host or
 * framing), placeholders replaced within `scope` (none replaced without one), the target as judged.
 */
function rebuildHead(
  head: RequestHead,
  target: Target,
  scope: CredentialScope | null,
  websocket: boolean,
  path: string,
  query: string,
): string | { name: string; problem: string } {
  const connTokens = head.headers.some((h) => h.lname === 'connection')
    ? new Set(
        head.headers
          .filter((h) => h.lname === 'connection')
          .flatMap((h) => h.value.split(',').map((t) => trimOws(t).toLowerCase())),
      )
    : NO_TOKENS;
  const hasQuery = target.pathAndQuery.includes('?');
  let wire = `${head.method} ${path}${hasQuery ? '?' + query : ''} HTTP/${head.version}\r\n`;
  if (head.host === null) wire += `Host: ${formatAuthority(target.host.host, target.port)}\r\n`;
  for (const h of head.headers) {
    if (HOP_BY_HOP.has(h.lname) || (connTokens.has(h.lname) && !NEVER_STRIPPED.has(h.lname))) continue;
    let value = h.value;
    if (scope !== null) {
      const v = substituteHeader(h.value, scope);
      if (!v.ok) return { name: v.name, problem: v.problem };
      value = v.value;
    }
    wire += `${h.name}: ${value}\r\n`;
  }
  if (websocket) wire += 'Connection: Upgrade\r\nUpgrade: websocket\r\n';
  else if (head.close) wire += 'Connection: close\r\n';
  wire += '\r\n';
  return wire;
}
