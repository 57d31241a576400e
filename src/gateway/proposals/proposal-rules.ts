/**
 * What a proposal proposes: from a denial (or an agent's request through policy.local), the
 * smallest rule that would allow it, against a given policy, and the notes an operator should read
 * before approving it. Pure functions: the proposal service (proposals.ts) calls them with the
 * compiled policy in force.
 *
 * Threat: the agent shapes what it is denied, and so what it is proposed; an operator approving in
 * a hurry must not be walked into granting more than the denial needed, nor leak a secret the agent
 * put into a URL. Hence:
 * - the rule is the smallest that allows what was seen: an L4 endpoint for the one host and port,
 *   limited to the calling binary; or, where requests are inspected, one method and a path glob
 *   no wider than the samples make it (one sample: its exact path);
 * - everything that widens reach is a risk note, and `approve-all --safe` approves only proposals
 *   without one: wildcards (host, method or path), private, loopback and link-local targets, a
 *   credential bound to the endpoint reaching more paths, write methods, a rule for any program;
 * - request samples keep method and path only (the audit never records a query string or a header),
 *   and path segments that look like secrets (tokens, keys, long random strings, credential
 *   placeholders) are replaced before they are stored or shown.
 */
import { BlockList, isIP } from 'node:net';
import type { ConnectDecision, PolicyGeneration } from '../../policy/index.js';

/** The facts of one denial, as the audit event gives them. */
export interface DenialFacts {
  level: 'connect' | 'request';
  host: string;
  port: number;
  /** The calling executable (in-sandbox path); '' when the proxy could not name it. */
  binary: string;
  ancestors: readonly string[];
  method?: string | undefined;
  /** The path, already redacted (redactPath). */
  path?: string | undefined;
  /** The address the proxy resolved the host to, when it got that far. */
  ip?: string | undefined;
}

/** A rule in terms of the policy's edit operations (policy-wire.ts). */
export interface ProposedRule {
  /** endpoint: a new network policy entry; request: an allow rule on an inspected endpoint. */
  kind: 'endpoint' | 'request';
  /** The host (endpoint), or the admitting endpoint's host pattern as written (request). */
  host: string;
  port: number;
  /** Executables the new entry admits (endpoint). */
  binaries: string[];
  method?: string | undefined;
  path?: string | undefined;
  /** The network policy entry it is added to (request) or creates (endpoint). */
  policyKey: string;
  /** Credentials bound to the endpoint a request rule widens. */
  credentials: string[];
  /** One line for people: what approving it allows. */
  summary: string;
}

/** Fields of the rule an operator may change before approving (`approve --edit`). */
export interface RuleEdit {
  host?: string | undefined;
  port?: number | undefined;
  binaries?: string[] | undefined;
  method?: string | undefined;
  path?: string | undefined;
}

export type WireOp =
  | { op: 'add-endpoint'; endpoint: string; binaries: string[]; policyKey: string }
  | { op: 'add-rule'; kind: 'allow'; rule: string; policyKey: string };

const READ_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/** Token shapes that are secrets whatever their length. */
const SECRET_PREFIX =
  /^(sk|pk|rk|sess|ghp|gho|ghs|ghu|ghr|github_pat|glpat|xox[abprs]|xapp|AKIA|ASIA|AIza|hf|npm|pypi|shpat|sq0atp)[-_]/i;

/** A path segment that looks like a secret: replaced by `{redacted}` wherever it is kept. */
export function secretLike(segment: string): boolean {
  if (segment.includes('carapace:cred:')) return true;
  if (SECRET_PREFIX.test(segment)) return true;
  if (/^bot\d+:/.test(segment)) return true; // a Telegram bot token in the path
  if (/^[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}$/.test(segment)) return true; // a JWT
  if (/^[0-9a-f]{32,}$/i.test(segment)) return true;
  // Long, mixed letters and digits, no separators a word would have: a key, not a name.
  return segment.length >= 24 && /[A-Za-z]/.test(segment) && /\d/.test(segment) && !/[.~]/.test(segment);
}

export const REDACTED = '{redacted}';

/** The path with every secret-looking segment replaced (the query is never part of it). */
export function redactPath(path: string): string {
  const q = path.indexOf('?');
  const bare = (q >= 0 ? path.slice(0, q) : path).slice(0, 2048);
  return bare
    .split('/')
    .map((s) => (secretLike(safeDecode(s)) ? REDACTED : s))
    .join('/');
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/** The part of a path that keys a proposal: its first segment (`/repos/**`), or `/`. */
export function pathKey(path: string): string {
  const first = path.split('/')[1] ?? '';
  if (first === '') return '/';
  return `/${first === REDACTED ? '*' : first}/**`;
}

/**
 * The narrowest glob that matches every sample: the path itself for one; segment by segment, `*`
 * where they differ, when all have as many segments; else their common leading segments and `/**`.
 * A redacted segment is `*` (any value in that place, never the secret itself).
 */
export function globFor(paths: readonly string[]): string {
  const split = [...new Set(paths)].map((p) => p.split('/').map((s) => (s === REDACTED ? '*' : s)));
  if (split.length === 0) return '/**';
  const first = split[0]!;
  if (split.every((s) => s.length === first.length)) {
    return first.map((seg, i) => (split.every((s) => s[i] === seg) ? seg : '*')).join('/') || '/';
  }
  const common: string[] = [];
  for (let i = 0; i < first.length; i++) {
    if (!split.every((s) => s[i] === first[i]) || (i === first.length - 1 && first[i] === '')) break;
    common.push(first[i]!);
  }
  const prefix = common.join('/');
  return prefix === '' ? '/**' : `${prefix}/**`;
}

/** The proposal's dedup key: host, port, binary, and for a request the method and path pattern. */
export function proposalKey(f: DenialFacts): string {
  const base = `${f.host.toLowerCase()}|${f.port}|${f.binary}`;
  return f.level === 'request' ? `${base}|${(f.method ?? '').toUpperCase()}|${pathKey(f.path ?? '/')}` : base;
}

/** `allow_<host>_<port>_<binary name>`, unique among `taken`. */
function entryKey(host: string, port: number, binary: string, taken: ReadonlySet<string>): string {
  const base = `allow_${host.replace(/[^A-Za-z0-9]+/g, '_')}_${port}${
    binary ? `_${(binary.split('/').pop() ?? '').replace(/[^A-Za-z0-9]+/g, '_')}` : ''
  }`.replace(/_+$/, '');
  let key = base;
  for (let n = 2; taken.has(key); n++) key = `${base}_${n}`;
  return key;
}

/**
 * Whether `gen` already allows what was denied: the connection (and, for a request, the request
 * itself). Such a proposal has nothing left to approve.
 */
export function allowedBy(gen: PolicyGeneration, f: DenialFacts): boolean {
  const q = { host: f.host, port: f.port, binary: f.binary || undefined, ancestors: f.ancestors };
  const c = gen.decideConnect(q);
  if (!c.allowed) return false;
  if (f.level === 'connect' || !c.inspect) return true;
  return gen.decideRequest({ ...q, method: f.method ?? 'GET', path: f.path ?? '/' }).allowed;
}

/**
 * The smallest rule that lets `f` through `gen`, given the paths seen (redacted). A request on an
 * endpoint the policy inspects gets an allow rule (method, path glob) on that endpoint; anything
 * else a new entry for the host and port, limited to the binary.
 */
export function smallestRule(
  gen: PolicyGeneration,
  f: DenialFacts,
  paths: readonly string[],
  entries: ReadonlySet<string>,
): ProposedRule {
  const q = { host: f.host, port: f.port, binary: f.binary || undefined, ancestors: f.ancestors };
  const c: ConnectDecision = gen.decideConnect(q);
  const ep = c.allowed && c.inspect ? c.endpoint : null;
  if (f.level === 'request' && ep && ep.host !== null) {
    const method = (f.method ?? 'GET').toUpperCase();
    const path = globFor(paths.length > 0 ? paths : [f.path ?? '/']);
    return {
      kind: 'request',
      host: ep.host,
      port: f.port,
      binaries: [],
      method,
      path,
      policyKey: ep.policy,
      credentials: [...ep.credentials],
      summary: `allow ${method} ${path} on ${ep.host}:${f.port} (network policy "${ep.policy}")`,
    };
  }
  const binaries = f.binary ? [f.binary] : [];
  return {
    kind: 'endpoint',
    host: f.host,
    port: f.port,
    binaries,
    policyKey: entryKey(f.host, f.port, f.binary, entries),
    credentials: [],
    summary: `allow ${binaries[0] ?? 'any program'} to connect to ${f.host}:${f.port}`,
  };
}

/** The proposed rule with the operator's edit applied (`approve --edit`), its summary redone. */
export function editRule(rule: ProposedRule, edit: RuleEdit | undefined): ProposedRule {
  if (!edit) return rule;
  const out: ProposedRule = { ...rule };
  if (edit.host !== undefined) out.host = edit.host;
  if (edit.port !== undefined) out.port = edit.port;
  if (rule.kind === 'endpoint' && edit.binaries !== undefined) out.binaries = edit.binaries;
  if (rule.kind === 'request') {
    if (edit.method !== undefined) out.method = edit.method.toUpperCase();
    if (edit.path !== undefined) out.path = edit.path;
  }
  out.summary =
    out.kind === 'request'
      ? `allow ${out.method} ${out.path} on ${out.host}:${out.port} (network policy "${out.policyKey}")`
      : `allow ${out.binaries.join(', ') || 'any program'} to connect to ${out.host}:${out.port}`;
  return out;
}

/** The policy edit operations that add `rule` (the API's wire form: policy-wire.ts). */
export function wireOps(rule: ProposedRule): WireOp[] {
  if (rule.kind === 'request') {
    return [
      {
        op: 'add-rule',
        kind: 'allow',
        rule: `${rule.host}:${rule.port}:${rule.method ?? 'GET'}:${rule.path ?? '/'}`,
        policyKey: rule.policyKey,
      },
    ];
  }
  return [
    {
      op: 'add-endpoint',
      endpoint: `${rule.host}:${rule.port}`,
      binaries: rule.binaries,
      policyKey: rule.policyKey,
    },
  ];
}

const PRIVATE = new BlockList();
for (const [net, bits] of [
  ['10.0.0.0', 8],
  ['172.16.0.0', 12],
  ['192.168.0.0', 16],
  ['100.64.0.0', 10],
  ['127.0.0.0', 8],
  ['169.254.0.0', 16],
  ['0.0.0.0', 8],
] as const)
  PRIVATE.addSubnet(net, bits, 'ipv4');
for (const [net, bits] of [
  ['fc00::', 7],
  ['fe80::', 10],
  ['::1', 128],
  ['::', 128],
] as const)
  PRIVATE.addSubnet(net, bits, 'ipv6');

function privateAddress(a: string): boolean {
  const v = isIP(a);
  if (v === 0) return false;
  const mapped = a.toLowerCase().startsWith('::ffff:') && isIP(a.slice(7)) === 4 ? a.slice(7) : null;
  if (mapped) return PRIVATE.check(mapped, 'ipv4');
  return PRIVATE.check(a, v === 4 ? 'ipv4' : 'ipv6');
}

/** Names that are this host or its network whatever DNS says. */
function localName(host: string): boolean {
  const h = host.toLowerCase().replace(/\.$/, '');
  return (
    h === 'localhost' ||
    h.endsWith('.localhost') ||
    h.endsWith('.local') ||
    h.endsWith('.internal') ||
    h.endsWith('.lan') ||
    h.endsWith('.home.arpa')
  );
}

/**
 * What approving `rule` would widen beyond the one thing that was denied. `rule` may be the
 * operator's edit of the proposed one (approve --edit), so every field is judged as written:
 * `binaries: []` in an edit is as wide as a denial whose binary was never known.
 */
export function riskNotes(
  rule: ProposedRule,
  f: Pick<DenialFacts, 'ip' | 'host'> & { binary?: string | undefined },
): string[] {
  const notes: string[] = [];
  if (rule.host.includes('*'))
    notes.push(`wildcard host ${rule.host}: the rule covers every host it matches`);
  if (rule.kind === 'request') {
    if (rule.method === '*') notes.push('wildcard method: every method, writes included');
    if ((rule.path ?? '').includes('*'))
      notes.push(`wildcard path ${rule.path}: more paths than the samples`);
    if (!READ_METHODS.has(rule.method ?? 'GET') && rule.method !== '*')
      notes.push(`write method ${rule.method}: the agent may change or send data`);
    if (rule.credentials.length > 0)
      notes.push(
        `credential ${rule.credentials.join(', ')} bound to this endpoint: it would reach ${rule.path} too`,
      );
  } else if (rule.binaries.length === 0) {
    notes.push(
      f.binary
        ? `binaries [] admits any program in the sandbox, not only ${f.binary}`
        : 'no binary known: the new entry admits any program in the sandbox',
    );
  }
  const target = rule.host;
  if (privateAddress(target) || localName(target) || (f.ip !== undefined && privateAddress(f.ip))) {
    notes.push(
      `private, loopback or link-local target (${f.ip !== undefined && f.ip !== target ? `${target} → ${f.ip}` : target})`,
    );
  }
  return notes;
}
