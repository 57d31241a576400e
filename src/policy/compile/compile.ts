/**
 * Policy → an immutable generation that answers the proxy's questions fast.
 *
 * Threat: the proxy asks once per connection and once per request of every agent, so a decision
 * must be cheap (target p99 ≤ 5 µs at 5,000 endpoints) and must not change under a request in
 * flight. A generation is built once and frozen; a policy reload builds a new one and the proxy
 * swaps the reference, so each connection is judged by exactly one generation.
 *
 * Index: exact hosts in a hash map; `*.x` patterns in a map by suffix (one lookup, for the
 * host's immediate parent domain); `**.x` patterns in a map by suffix (one lookup per parent
 * domain, so a decision costs a handful of hash lookups whatever the number of endpoints);
 * hostless `allowed_ips` endpoints by port.
 *
 * Semantics: entries grant, never take away — a connection is allowed when any entry has an
 * endpoint matching host and port AND admits the caller's binary. Deny rules are the exception:
 * a request is refused when a deny rule of any admitting endpoint matches it, whatever another
 * entry allows. Several admitting entries → the lexicographically first key decides and is
 * reported, as in OpenShell.
 */
import { isIP } from 'node:net';
import { compileBinaryMatcher, type BinaryMatch, type BinaryMatcher } from './binary-matcher.js';
import type {
  ConnectDecision,
  ConnectQuery,
  EndpointView,
  PolicyGeneration,
  RequestDecision,
  RequestQuery,
} from './decisions.js';
import { endpointMode } from '../load/endpoint-mode.js';
import { normalizeHost, parseHostPattern } from '../patterns/host-pattern.js';
import { validatePolicy } from '../load/loader.js';
import {
  canonicalRequestPath,
  compileEndpointRules,
  queryValues,
  type EndpointRules,
} from './request-rules.js';
import type { Endpoint, Policy } from '../schema/schema.js';
import type { Inference } from '../schema/schema-extensions.js';

interface Entry {
  view: EndpointView;
  /** `host:ports in policy "key"`, for reasons (made once: decisions are hot). */
  where: string;
  /** `[view]`, the decision's endpoints when this entry alone matched. */
  alone: readonly EndpointView[];
  /** Single-port endpoints (the common case) compare a number; others use the set. */
  port: number;
  ports: ReadonlySet<number> | null;
  binaries: BinaryMatcher;
  rules: EndpointRules | null;
  order: number;
}

interface Index {
  exact: Map<string, Entry[]>;
  oneLabel: Map<string, Entry[]>;
  anyDepth: Map<string, Entry[]>;
  hostless: Entry[];
}

interface Match {
  entry: Entry;
  binary: BinaryMatch;
}

function freezeView(policy: string, name: string, index: number, ep: Endpoint): EndpointView {
  const mode = endpointMode(ep);
  const ports = ep.ports ?? (ep.port === undefined ? [] : [ep.port]);
  return Object.freeze({
    policy,
    name,
    index,
    host: ep.host === undefined ? null : normalizeHost(ep.host),
    ports: Object.freeze([...ports]),
    inspect: mode.inspect,
    protocol: mode.protocol,
    tls: ep.tls === 'skip' ? 'skip' : 'auto',
    tlsDeclared: ep.tls === 'terminate' || ep.tls === 'passthrough',
    enforcement: ep.enforcement ?? 'enforce',
    access: ep.access ?? null,
    allowedIps: Object.freeze([...(ep.allowed_ips ?? [])]),
    credentials: Object.freeze([...(ep.credentials ?? [])]),
  });
}

function push(map: Map<string, Entry[]>, key: string, entry: Entry): void {
  const list = map.get(key);
  if (list === undefined) map.set(key, [entry]);
  else list.push(entry);
}

function buildIndex(policy: Policy): { index: Index; all: Entry[] } {
  const index: Index = { exact: new Map(), oneLabel: new Map(), anyDepth: new Map(), hostless: [] };
  const all: Entry[] = [];
  const keys = Object.keys(policy.network_policies ?? {}).sort();
  for (const key of keys) {
    const np = policy.network_policies?.[key];
    if (np === undefined) continue;
    const binaries = compileBinaryMatcher(np.binaries);
    np.endpoints.forEach((ep, i) => {
      const view = freezeView(key, np.name ?? key, i, ep);
      const ports = view.ports;
      const entry: Entry = {
        view,
        where: `${view.host ?? '*'}:${view.ports.join(',')} in policy "${view.policy}"`,
        alone: Object.freeze([view]),
        port: ports.length === 1 ? (ports[0] as number) : -1,
        ports: ports.length === 1 ? null : new Set(ports),
        binaries,
        rules: view.inspect ? compileEndpointRules(ep.access, ep.rules, ep.deny_rules) : null,
        order: all.length,
      };
      all.push(entry);
      if (ep.host === undefined) {
        index.hostless.push(entry);
        return;
      }
      const pattern = parseHostPattern(ep.host);
      if ('error' in pattern) return; // unreachable: validatePolicy rejected it
      if (pattern.kind === 'exact') push(index.exact, pattern.host, entry);
      else push(pattern.kind === 'one-label' ? index.oneLabel : index.anyDepth, pattern.suffix, entry);
    });
  }
  return { index, all };
}

function portMatches(e: Entry, port: number): boolean {
  return e.ports === null ? e.port === port : e.ports.has(port);
}

/** Diagnostics gathered while matching, for the reason of a denial. */
interface Misses {
  hostPorts: Set<number> | null;
  binaryPolicies: Map<string, readonly string[]> | null;
  /** An ancestor of the caller that a listed binary without `descendants: true` matches. */
  heldBack: string | null;
}

function consider(list: Entry[] | undefined, q: ConnectQuery, out: Match[], misses: Misses): void {
  if (list === undefined) return;
  for (const e of list) {
    if (!portMatches(e, q.port)) {
      (misses.hostPorts ??= new Set()).add(e.port >= 0 ? e.port : (e.view.ports[0] ?? 0));
      continue;
    }
    const b = e.binaries.match(q.binary, q.ancestors);
    if (b === null) {
      (misses.binaryPolicies ??= new Map()).set(e.view.policy, e.binaries.patterns);
      misses.heldBack ??= e.binaries.heldBack(q.ancestors);
    } else out.push({ entry: e, binary: b });
  }
}

function gather(index: Index, host: string, q: ConnectQuery, misses: Misses): Match[] {
  const out: Match[] = [];
  consider(index.exact.get(host), q, out, misses);
  // A wildcard names domains; it never matches an IP literal, however it is spelt.
  if ((index.oneLabel.size > 0 || index.anyDepth.size > 0) && isIP(host) === 0) {
    let dot = host.indexOf('.');
    let parent = true;
    while (dot >= 0) {
      const suffix = host.slice(dot + 1);
      if (parent) consider(index.oneLabel.get(suffix), q, out, misses);
      consider(index.anyDepth.get(suffix), q, out, misses);
      parent = false;
      dot = host.indexOf('.', dot + 1);
    }
  }
  if (index.hostless.length > 0) consider(index.hostless, q, out, misses);
  if (out.length > 1) out.sort((a, b) => a.entry.order - b.entry.order);
  return out;
}

function describeCaller(q: ConnectQuery): string {
  const who = q.binary === undefined || q.binary === '' ? 'an unidentified program' : `"${q.binary}"`;
  const chain =
    q.ancestors !== undefined && q.ancestors.length > 0 ? ` (ancestors: ${q.ancestors.join(' → ')})` : '';
  return `${who}${chain}`;
}

function denialReason(host: string, q: ConnectQuery, misses: Misses): string {
  if (misses.binaryPolicies !== null) {
    const parts = [...misses.binaryPolicies].map(([p, pats]) => `"${p}" allows ${pats.join(', ')}`);
    const lineage = misses.heldBack
      ? `; it runs under "${misses.heldBack}", but the programs a binary starts count only with descendants: true`
      : '';
    return `${host}:${q.port} is allowed only for other programs, not ${describeCaller(q)}: ${parts.join('; ')}${lineage}`;
  }
  if (misses.hostPorts !== null) {
    return `no policy allows ${host}:${q.port}; ${host} is allowed on port ${[...misses.hostPorts].sort((a, b) => a - b).join(', ')}`;
  }
  return `no policy allows ${host}:${q.port}`;
}

function describeBinaryMatch(b: BinaryMatch): string {
  if (b.pattern === null) return 'any program';
  const who = b.viaAncestor ? `a child of "${b.path}"` : `"${b.path}"`;
  return b.pattern === b.path ? who : `${who} (matches "${b.pattern}")`;
}

function union(matches: Match[], pick: (v: EndpointView) => readonly string[]): readonly string[] {
  return Object.freeze([...new Set(matches.flatMap((m) => pick(m.entry.view)))]);
}

const pickAllowedIps = (v: EndpointView): readonly string[] => v.allowedIps;
const pickCredentials = (v: EndpointView): readonly string[] => v.credentials;

class Generation implements PolicyGeneration {
  readonly endpointCount: number;
  readonly #index: Index;
  readonly #all: readonly EndpointView[];
  readonly inference: Inference | null;

  constructor(policy: Policy) {
    const { index, all } = buildIndex(policy);
    this.#index = index;
    this.#all = Object.freeze(all.map((e) => e.view));
    this.endpointCount = all.length;
    this.inference = policy.inference === undefined ? null : deepFreeze(structuredClone(policy.inference));
    Object.freeze(this);
  }

  endpoints(): readonly EndpointView[] {
    return this.#all;
  }

  #match(q: ConnectQuery): { host: string; matches: Match[]; misses: Misses } {
    const host = normalizeHost(q.host);
    const misses: Misses = { hostPorts: null, binaryPolicies: null, heldBack: null };
    return { host, matches: gather(this.#index, host, q, misses), misses };
  }

  decideConnect(q: ConnectQuery): ConnectDecision {
    const { host, matches, misses } = this.#match(q);
    const first = matches[0];
    if (first === undefined) {
      return {
        allowed: false,
        verdict: 'deny',
        policy: null,
        name: null,
        reason: denialReason(host, q, misses),
        enforcement: 'enforce',
        endpoint: null,
        endpoints: [],
        inspect: false,
        allowedIps: [],
        credentials: [],
        binary: null,
      };
    }
    const v = first.entry.view;
    const via = describeBinaryMatch(first.binary);
    // One match is the common case: nothing to merge, and its arrays were made at compile time.
    const one = matches.length === 1;
    let inspect = false;
    for (const m of matches) inspect ||= m.entry.view.inspect;
    return {
      allowed: true,
      verdict: 'allow',
      policy: v.policy,
      name: v.name,
      reason: `${host}:${q.port} allowed by ${first.entry.where} for ${via}`,
      enforcement: v.enforcement,
      endpoint: v,
      endpoints: one ? first.entry.alone : matches.map((m) => m.entry.view),
      inspect,
      allowedIps: one ? v.allowedIps : union(matches, pickAllowedIps),
      credentials: one ? v.credentials : union(matches, pickCredentials),
      binary: first.binary,
    };
  }

  decideRequest(q: RequestQuery): RequestDecision {
    const { host, matches, misses } = this.#match(q);
    const first = matches[0];
    const deny = (reason: string, view: EndpointView | null): RequestDecision => ({
      allowed: false,
      verdict: 'deny',
      policy: view?.policy ?? null,
      name: view?.name ?? null,
      reason,
      enforcement: 'enforce',
      endpoint: view,
      rule: null,
    });
    if (first === undefined) return deny(denialReason(host, q, misses), null);
    const method = q.method.toUpperCase();
    let rawPath = q.path;
    let rawQuery = q.query;
    const qmark = rawPath.indexOf('?');
    if (qmark >= 0) {
      rawQuery ??= rawPath.slice(qmark + 1);
      rawPath = rawPath.slice(0, qmark);
    }
    const path = canonicalRequestPath(rawPath);
    if (path === null) {
      return deny(
        `${method} ${rawPath}: the path cannot be read unambiguously (bad escape, NUL or ".." above the root)`,
        first.entry.view,
      );
    }
    const query = queryValues(rawQuery);
    const request = `${method} ${path}`;
    for (const { entry } of matches) {
      const d = entry.rules?.denying(method, path, query);
      if (d !== undefined && d !== null) {
        const audit = entry.view.enforcement === 'audit';
        return {
          allowed: audit,
          verdict: 'deny',
          policy: entry.view.policy,
          name: entry.view.name,
          reason: `${request} denied by "${d.text}" on ${entry.where}${audit ? ' (audit: allowed and logged)' : ''}`,
          enforcement: entry.view.enforcement,
          endpoint: entry.view,
          rule: d,
        };
      }
    }
    for (const { entry } of matches) {
      const v = entry.view;
      if (entry.rules === null) {
        return {
          allowed: true,
          verdict: 'allow',
          policy: v.policy,
          name: v.name,
          reason: `${request} allowed: ${entry.where} is not inspected, every request passes`,
          enforcement: v.enforcement,
          endpoint: v,
          rule: null,
        };
      }
      const a = entry.rules.allowing(method, path, query);
      if (a !== null) {
        return {
          allowed: true,
          verdict: 'allow',
          policy: v.policy,
          name: v.name,
          reason: `${request} allowed by "${a.text}" on ${entry.where}`,
          enforcement: v.enforcement,
          endpoint: v,
          rule: a,
        };
      }
    }
    const audit = matches.every((m) => m.entry.view.enforcement === 'audit');
    const v = first.entry.view;
    return {
      allowed: audit,
      verdict: 'deny',
      policy: v.policy,
      name: v.name,
      reason: `${request} matches no allow rule of ${first.entry.where}${audit ? ' (audit: allowed and logged)' : ''}`,
      enforcement: audit ? 'audit' : 'enforce',
      endpoint: v,
      rule: null,
    };
  }
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

/**
 * Compiles a policy into an immutable generation. The policy is validated first (the same
 * checks as the loader); an invalid one throws PolicyError.
 */
export function compilePolicy(policy: Policy): PolicyGeneration {
  return new Generation(validatePolicy(policy));
}
