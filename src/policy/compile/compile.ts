/**
 * Policy → an immutable generation that answers the proxy's questions fast.
 *
 * Threat: the proxy asks once per connection and once per request of every agent, so a decision
 * must be cheap (target p99 ≤ 5 µs at 5,000 endpoints) and must not change under a request in
 * flight. A generation is built once and frozen; a policy reload builds a new one and the proxy
 * swaps the reference, so each connection is judged by exactly one generation.
 *
 * Index: see endpoint-index.ts (hash lookups by host and by parent domain, whatever the number of
 * endpoints; the allowed path allocates little more than the decision itself).
 *
 * Semantics: entries grant, never take away — a connection is allowed when any entry has an
 * endpoint matching host and port AND admits the caller's binary. Deny rules are the exception:
 * a request is refused when a deny rule of any admitting endpoint matches it, whatever another
 * entry allows. Several admitting entries → the lexicographically first key decides and is
 * reported, as in OpenShell.
 */
import { compileBinaryMatcher, type BinaryHit, type BinaryMatcher } from './binary-matcher.js';
import type {
  ConnectDecision,
  ConnectQuery,
  EndpointView,
  PolicyGeneration,
  RequestDecision,
  RequestQuery,
} from './decisions.js';
import { EndpointIndex, type Entry, type Found, type IndexKey } from './endpoint-index.js';
import { endpointMode } from '../load/endpoint-mode.js';
import { GlobCache } from '../patterns/glob.js';
import { normalizeHost, parseHostPattern } from '../patterns/host-pattern.js';
import { validatePolicy } from '../load/loader.js';
import { canonicalRequestPath, compileEndpointRules, queryValues } from './request-rules.js';
import type { Binary, Endpoint, Policy } from '../schema/schema.js';
import type { Inference } from '../schema/schema-extensions.js';

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

/**
 * One matcher per distinct `binaries` list: entries that list the same programs share it (a
 * matcher is pure), which keeps what a decision reads in few places.
 */
function matcherCache(globs: GlobCache): (binaries: readonly Binary[] | undefined) => BinaryMatcher {
  const seen = new Map<string, BinaryMatcher>();
  return (binaries) => {
    const key = JSON.stringify(binaries?.map((b) => [b.path, b.descendants === true]) ?? null);
    let m = seen.get(key);
    if (m === undefined) {
      m = compileBinaryMatcher(binaries, globs);
      seen.set(key, m);
    }
    return m;
  };
}

function buildIndex(policy: Policy): { index: EndpointIndex; all: Entry[] } {
  const indexed: { entry: Entry; pattern: IndexKey | null }[] = [];
  const all: Entry[] = [];
  const globs = new GlobCache();
  const matcherOf = matcherCache(globs);
  const keys = Object.keys(policy.network_policies ?? {}).sort();
  for (const key of keys) {
    const np = policy.network_policies?.[key];
    if (np === undefined) continue;
    const binaries = matcherOf(np.binaries);
    const binaryNote = `"${key}" allows ${binaries.patterns.join(', ')}`;
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
        binaryNote,
        rules: view.inspect ? compileEndpointRules(ep.access, ep.rules, ep.deny_rules, globs) : null,
        order: all.length,
        next: null,
      };
      all.push(entry);
      if (ep.host === undefined) {
        indexed.push({ entry, pattern: null });
        return;
      }
      const pattern = parseHostPattern(ep.host);
      if ('error' in pattern) return; // unreachable: validatePolicy rejected it
      indexed.push({
        entry,
        pattern:
          pattern.kind === 'exact'
            ? { kind: 'exact', key: pattern.host }
            : { kind: pattern.kind, key: pattern.suffix },
      });
    });
  }
  return { index: new EndpointIndex(indexed), all };
}

/** The found entries' views, or the one entry's (made at compile time). */
function viewsOf(found: Found): readonly EndpointView[] {
  if (found.count === 1) return (found.entries[0] as Entry).alone;
  const out: EndpointView[] = [];
  for (let i = 0; i < found.count; i++) out.push((found.entries[i] as Entry).view);
  return out;
}

/** The union of the found entries' lists, in order, each value once. */
function union(found: Found, pick: (v: EndpointView) => readonly string[]): readonly string[] {
  const out = new Set<string>();
  for (let i = 0; i < found.count; i++) for (const x of pick((found.entries[i] as Entry).view)) out.add(x);
  return Object.freeze([...out]);
}

const pickAllowedIps = (v: EndpointView): readonly string[] => v.allowedIps;
const pickCredentials = (v: EndpointView): readonly string[] => v.credentials;

function denied(reason: string, view: EndpointView | null): RequestDecision {
  return {
    allowed: false,
    verdict: 'deny',
    policy: view?.policy ?? null,
    name: view?.name ?? null,
    reason,
    enforcement: 'enforce',
    endpoint: view,
    rule: null,
  };
}

class Generation implements PolicyGeneration {
  readonly endpointCount: number;
  readonly #index: EndpointIndex;
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

  decideConnect(q: ConnectQuery): ConnectDecision {
    const host = normalizeHost(q.host);
    const found = this.#index.search(host, q);
    if (found.count === 0) {
      return {
        allowed: false,
        verdict: 'deny',
        policy: null,
        name: null,
        reason: this.#index.denialReason(host, q),
        enforcement: 'enforce',
        endpoint: null,
        endpoints: [],
        inspect: false,
        allowedIps: [],
        credentials: [],
        binary: null,
      };
    }
    const first = found.entries[0] as Entry;
    const hit = found.hits[0] as BinaryHit;
    const v = first.view;
    // One match is the common case: nothing to merge, and its arrays were made at compile time.
    const one = found.count === 1;
    let inspect = false;
    for (let i = 0; i < found.count; i++) inspect ||= (found.entries[i] as Entry).view.inspect;
    return {
      allowed: true,
      verdict: 'allow',
      policy: v.policy,
      name: v.name,
      reason: `${host}:${q.port} allowed by ${first.where} for ${hit.text}`,
      enforcement: v.enforcement,
      endpoint: v,
      endpoints: viewsOf(found),
      inspect,
      allowedIps: one ? v.allowedIps : union(found, pickAllowedIps),
      credentials: one ? v.credentials : union(found, pickCredentials),
      binary: hit.match,
    };
  }

  decideRequest(q: RequestQuery): RequestDecision {
    const host = normalizeHost(q.host);
    const found = this.#index.search(host, q);
    if (found.count === 0) return denied(this.#index.denialReason(host, q), null);
    const first = found.entries[0] as Entry;
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
      return denied(
        `${method} ${rawPath}: the path cannot be read unambiguously (bad escape, NUL or ".." above the root)`,
        first.view,
      );
    }
    const query = queryValues(rawQuery);
    const request = `${method} ${path}`;
    for (let i = 0; i < found.count; i++) {
      const entry = found.entries[i] as Entry;
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
    let audit = true;
    for (let i = 0; i < found.count; i++) {
      const entry = found.entries[i] as Entry;
      const v = entry.view;
      if (v.enforcement !== 'audit') audit = false;
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
    const v = first.view;
    return {
      allowed: audit,
      verdict: 'deny',
      policy: v.policy,
      name: v.name,
      reason: `${request} matches no allow rule of ${first.where}${audit ? ' (audit: allowed and logged)' : ''}`,
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
