/**
 * The endpoints of a generation, indexed by host, and the search that finds every endpoint that
 * admits a connection.
 *
 * Index: exact hosts in a hash map; `*.x` patterns in a map by suffix (one lookup, for the host's
 * immediate parent domain); `**.x` patterns in a map by suffix (one lookup per parent domain that
 * has a dot, since no wildcard's domain is a single label); hostless `allowed_ips` endpoints in a
 * list. A decision costs a handful of hash lookups whatever the number of endpoints. Endpoints
 * under one key are chained in policy order (`next`), so a lookup yields its entries with no array
 * in between.
 *
 * Threat: a candidate the search drops is a connection refused that the policy allows, or — when
 * the dropped one carries a deny rule — a request allowed that the policy refuses. Every decision
 * therefore looks at every entry whose pattern can match (test/policy/index-candidates.test.ts
 * checks the index against a scan of every endpoint).
 *
 * Cost: the proxy asks once per connection and once per request of every agent, and the tail of
 * that time is what agents feel. What a decision allocates is what costs in the tail: every few
 * megabytes a scavenge, and whenever V8 has just grown its young generation, a first touch of a
 * fresh page (tens of microseconds on a VM whose host backs memory lazily) inside whichever
 * decision allocates into it. So the search writes its matches into buffers the index owns
 * (decisions are synchronous and never re-enter), the diagnostics of a denial are gathered only
 * for a denial, and what does not depend on the query is made at compile time.
 */
import { isIP } from 'node:net';
import type { BinaryHit, BinaryMatcher } from './binary-matcher.js';
import type { ConnectQuery, EndpointView } from './decisions.js';
import type { EndpointRules } from './request-rules.js';

export interface Entry {
  view: EndpointView;
  /** `host:ports in policy "key"`, for reasons (made once: decisions are hot). */
  where: string;
  /** `[view]`, the decision's endpoints when this entry alone matched. */
  alone: readonly EndpointView[];
  /** Single-port endpoints (the common case) compare a number; others use the set. */
  port: number;
  ports: ReadonlySet<number> | null;
  binaries: BinaryMatcher;
  /** `"key" allows /usr/bin/git, …`, for the reason of a denial by binary. */
  binaryNote: string;
  rules: EndpointRules | null;
  order: number;
  /** The next entry under the same index key, in policy order. */
  next: Entry | null;
}

/** Where the search found matches: entries and binary hits at 0…count-1, in policy order. */
export interface Found {
  count: number;
  entries: Entry[];
  hits: BinaryHit[];
}

function portMatches(e: Entry, port: number): boolean {
  return e.ports === null ? e.port === port : e.ports.has(port);
}

/** Diagnostics gathered while matching, for the reason of a denial. */
interface Misses {
  hostPorts: number[];
  /** One note per policy key that lists binaries the caller is not, in the order first met. */
  binaryPolicies: string[];
  binaryNotes: string[];
  /** An ancestor of the caller that a listed binary without `descendants: true` matches. */
  heldBack: string | null;
}

function describeCaller(q: ConnectQuery): string {
  const who = q.binary === undefined || q.binary === '' ? 'an unidentified program' : `"${q.binary}"`;
  const chain =
    q.ancestors !== undefined && q.ancestors.length > 0 ? ` (ancestors: ${q.ancestors.join(' → ')})` : '';
  return `${who}${chain}`;
}

export class EndpointIndex {
  readonly #exact = new Map<string, Entry>();
  readonly #oneLabel = new Map<string, Entry>();
  readonly #anyDepth = new Map<string, Entry>();
  readonly #hostless: Entry[] = [];
  readonly #wildcards: boolean;
  /** Reused by every search of this generation; read by the caller before the next search. */
  readonly #found: Found = { count: 0, entries: [], hits: [] };

  /** `entries` in policy order, each with the host pattern it is indexed under. */
  constructor(entries: readonly { entry: Entry; pattern: IndexKey | null }[]) {
    for (const { entry, pattern } of entries) {
      if (pattern === null) this.#hostless.push(entry);
      else if (pattern.kind === 'exact') append(this.#exact, pattern.key, entry);
      else append(pattern.kind === 'one-label' ? this.#oneLabel : this.#anyDepth, pattern.key, entry);
    }
    this.#wildcards = this.#oneLabel.size > 0 || this.#anyDepth.size > 0;
  }

  /**
   * Every entry that admits the caller to `host` (normalized) and `q.port`, in policy order. The
   * result is this index's own buffer: valid until the next call.
   */
  search(host: string, q: ConnectQuery): Found {
    const found = this.#found;
    found.count = 0;
    this.#walk(host, q, found, null);
    if (found.count > 1) sortByOrder(found);
    return found;
  }

  /** Why nothing admits the caller to `host`:`q.port` (after `search` found nothing). */
  denialReason(host: string, q: ConnectQuery): string {
    const misses: Misses = { hostPorts: [], binaryPolicies: [], binaryNotes: [], heldBack: null };
    this.#walk(host, q, null, misses);
    if (misses.binaryNotes.length > 0) {
      const lineage = misses.heldBack
        ? `; it runs under "${misses.heldBack}", but the programs a binary starts count only with descendants: true`
        : '';
      return `${host}:${q.port} is allowed only for other programs, not ${describeCaller(q)}: ${misses.binaryNotes.join('; ')}${lineage}`;
    }
    if (misses.hostPorts.length > 0) {
      const ports = misses.hostPorts.sort((a, b) => a - b).join(', ');
      return `no policy allows ${host}:${q.port}; ${host} is allowed on port ${ports}`;
    }
    return `no policy allows ${host}:${q.port}`;
  }

  /** Visits every entry whose host pattern matches `host`: into `found`, or its misses. */
  #walk(host: string, q: ConnectQuery, found: Found | null, misses: Misses | null): void {
    consider(this.#exact.get(host), q, found, misses);
    if (this.#wildcards) {
      // A wildcard names domains; it never matches an IP literal, however it is spelt. isIP is
      // asked only once a wildcard could match (it is two regular expressions).
      let ip = -1;
      let dot = host.indexOf('.');
      let parent = true;
      while (dot >= 0) {
        const next = host.indexOf('.', dot + 1);
        // Every wildcard's domain has a dot (parseHostPattern refuses `*.com`): a last label alone
        // is no key.
        if (next < 0) break;
        const suffix = host.slice(dot + 1);
        const one = parent ? this.#oneLabel.get(suffix) : undefined;
        const any = this.#anyDepth.get(suffix);
        if (one !== undefined || any !== undefined) {
          if (ip < 0) ip = isIP(host);
          if (ip !== 0) break;
          consider(one, q, found, misses);
          consider(any, q, found, misses);
        }
        parent = false;
        dot = next;
      }
    }
    for (const e of this.#hostless) considerOne(e, q, found, misses);
  }
}

export type IndexKey = { kind: 'exact' | 'one-label' | 'any-depth'; key: string };

function append(map: Map<string, Entry>, key: string, entry: Entry): void {
  let e = map.get(key);
  if (e === undefined) {
    map.set(key, entry);
    return;
  }
  while (e.next !== null) e = e.next;
  e.next = entry;
}

function consider(
  first: Entry | undefined,
  q: ConnectQuery,
  found: Found | null,
  misses: Misses | null,
): void {
  for (let e = first ?? null; e !== null; e = e.next) considerOne(e, q, found, misses);
}

function considerOne(e: Entry, q: ConnectQuery, found: Found | null, misses: Misses | null): void {
  if (!portMatches(e, q.port)) {
    if (misses !== null) {
      const port = e.port >= 0 ? e.port : (e.view.ports[0] ?? 0);
      if (!misses.hostPorts.includes(port)) misses.hostPorts.push(port);
    }
    return;
  }
  const b = e.binaries.match(q.binary, q.ancestors);
  if (b === null) {
    if (misses !== null) {
      if (!misses.binaryPolicies.includes(e.view.policy)) {
        misses.binaryPolicies.push(e.view.policy);
        misses.binaryNotes.push(e.binaryNote);
      }
      misses.heldBack ??= e.binaries.heldBack(q.ancestors);
    }
  } else if (found !== null) {
    found.entries[found.count] = e;
    found.hits[found.count] = b;
    found.count++;
  }
}

/** Insertion sort by policy order: several matches are few, and orders are distinct. */
function sortByOrder(found: Found): void {
  const { entries, hits } = found;
  for (let i = 1; i < found.count; i++) {
    const e = entries[i] as Entry;
    const h = hits[i] as BinaryHit;
    let j = i - 1;
    while (j >= 0 && (entries[j] as Entry).order > e.order) {
      entries[j + 1] = entries[j] as Entry;
      hits[j + 1] = hits[j] as BinaryHit;
      j--;
    }
    entries[j + 1] = e;
    hits[j + 1] = h;
  }
}
