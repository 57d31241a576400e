/**
 * L7 rules of one inspected endpoint: the access preset or allow rules, and the deny rules.
 *
 * Requests are judged on a canonical path: percent-decoded, `.`/`..` resolved, repeated slashes
 * collapsed. A path that cannot be canonicalized (bad escape, NUL, `..` above the root) is denied:
 * a matcher must never see a path the upstream server would read differently. An encoded slash
 * (`%2F`, used by npm for scoped packages) stays encoded inside its segment, so `*` cannot be
 * stretched across it. Methods compare case-insensitively; a rule for GET also covers HEAD
 * (RFC 9110: the same request without a body), as in OpenShell.
 *
 * Paths compare case-sensitively for allow rules and case-insensitively for deny rules: a server
 * that folds case (IIS, a case-insensitive filesystem, many routers) serves `/ADMIN` as `/admin`, so
 * a deny rule for `/admin/**` also refuses `/ADMIN/x` and `/Admin/x` (the stricter reading on both
 * sides: an allow rule never admits more than it spells).
 */
import { GlobCache } from '../patterns/glob.js';
import type { Access, AllowRule, DenyRule, QueryMatcher } from '../schema/schema.js';

export interface RuleView {
  kind: 'access' | 'allow' | 'deny';
  /** Index in `rules` or `deny_rules`; -1 for an access preset. */
  index: number;
  /** `access: read-only (GET, HEAD, OPTIONS)`, `allow GET /repos/**`, `deny DELETE /**`. */
  text: string;
}

export type QueryInput = string | URLSearchParams | Readonly<Record<string, string | readonly string[]>>;
export type QueryValues = ReadonlyMap<string, readonly string[]>;

export const ACCESS_METHODS: Record<Access, readonly string[] | null> = {
  'read-only': ['GET', 'HEAD', 'OPTIONS'],
  'read-write': ['GET', 'HEAD', 'OPTIONS', 'POST', 'PUT', 'PATCH'],
  full: null,
};

interface CompiledMatch {
  view: RuleView;
  method: string;
  path: RegExp;
  query: { key: string; globs: RegExp[] }[];
}

export interface EndpointRules {
  /** The first allow (or the access preset) that admits the request, or null. */
  allowing(method: string, path: string, query: QueryValues): RuleView | null;
  /** The first deny rule that matches the request, or null. */
  denying(method: string, path: string, query: QueryValues): RuleView | null;
}

function compileMatch(
  kind: 'allow' | 'deny',
  index: number,
  m: { method: string; path: string; query?: Record<string, QueryMatcher> | undefined },
  globs: GlobCache,
): CompiledMatch {
  const query = Object.entries(m.query ?? {}).map(([key, matcher]) => ({
    key,
    globs: (typeof matcher === 'string' ? [matcher] : matcher.any).map((v) => globs.value(v)),
  }));
  const q = Object.keys(m.query ?? {}).length > 0 ? ` ?${Object.keys(m.query ?? {}).join('&')}` : '';
  return {
    view: Object.freeze({ kind, index, text: `${kind} ${m.method.toUpperCase()} ${m.path}${q}` }),
    method: m.method.toUpperCase(),
    path: globs.path(m.path, kind === 'deny'),
    query,
  };
}

function methodMatches(rule: string, method: string): boolean {
  return rule === '*' || rule === method || (method === 'HEAD' && rule === 'GET');
}

export function compileEndpointRules(
  access: Access | undefined,
  rules: readonly AllowRule[] | undefined,
  denyRules: readonly DenyRule[] | undefined,
  globs: GlobCache = new GlobCache(),
): EndpointRules {
  const allows = (rules ?? []).map((r, i) => compileMatch('allow', i, r.allow, globs));
  const denies = (denyRules ?? []).map((r, i) => compileMatch('deny', i, r, globs));
  const presetMethods = access === undefined ? undefined : ACCESS_METHODS[access];
  const presetView: RuleView | null =
    access === undefined
      ? null
      : Object.freeze({
          kind: 'access',
          index: -1,
          text: `access: ${access} (${presetMethods === null || presetMethods === undefined ? 'every method' : presetMethods.join(', ')})`,
        });
  return {
    allowing(method, path, query) {
      if (presetView !== null) {
        return presetMethods === null || presetMethods?.includes(method) ? presetView : null;
      }
      for (const a of allows) {
        if (methodMatches(a.method, method) && a.path.test(path) && allowQueryMatches(a.query, query))
          return a.view;
      }
      return null;
    },
    denying(method, path, query) {
      for (const d of denies) {
        if (methodMatches(d.method, method) && d.path.test(path) && denyQueryMatches(d.query, query))
          return d.view;
      }
      return null;
    },
  };
}

/** Allow side: every configured parameter is present and every one of its values matches. */
function allowQueryMatches(rules: CompiledMatch['query'], query: QueryValues): boolean {
  for (const { key, globs } of rules) {
    const values = query.get(key);
    if (values === undefined || values.length === 0) return false;
    for (const v of values) if (!globs.some((g) => g.test(v))) return false;
  }
  return true;
}

/** Deny side: every configured parameter is present and at least one of its values matches. */
function denyQueryMatches(rules: CompiledMatch['query'], query: QueryValues): boolean {
  for (const { key, globs } of rules) {
    const values = query.get(key);
    if (values === undefined || !values.some((v) => globs.some((g) => g.test(v)))) return false;
  }
  return true;
}

const EMPTY_QUERY: QueryValues = new Map();

export function queryValues(input: QueryInput | undefined): QueryValues {
  if (input === undefined || input === '') return EMPTY_QUERY;
  const out = new Map<string, string[]>();
  const add = (k: string, v: string): void => {
    const list = out.get(k);
    if (list === undefined) out.set(k, [v]);
    else list.push(v);
  };
  if (typeof input === 'string' || input instanceof URLSearchParams) {
    const params =
      typeof input === 'string' ? new URLSearchParams(input.startsWith('?') ? input.slice(1) : input) : input;
    for (const [k, v] of params) add(k, v);
  } else {
    for (const [k, v] of Object.entries(input)) {
      if (typeof v === 'string') add(k, v);
      else for (const item of v) add(k, item);
    }
  }
  return out;
}

/** The canonical form of a request path, or null when it has none (the request is then denied). */
export function canonicalRequestPath(raw: string): string | null {
  if (!raw.startsWith('/')) return null;
  // Fast path: no escapes, no empty segments, no segment that starts with a dot.
  if (!/%|\/\/|\/\.|\0/.test(raw)) return raw;
  const segments: string[] = [];
  const parts = raw.split('/');
  const trailingSlash = parts.length > 2 && parts[parts.length - 1] === '';
  for (const part of parts) {
    if (part === '') continue;
    let decoded: string;
    try {
      decoded = part
        .split(/%2f/i)
        .map((p) => decodeURIComponent(p))
        .join('%2F');
    } catch {
      return null;
    }
    if (decoded.includes('\0') || decoded.includes('/')) return null;
    if (decoded === '.') continue;
    if (decoded === '..') {
      if (segments.pop() === undefined) return null;
      continue;
    }
    segments.push(decoded);
  }
  if (segments.length === 0) return '/';
  return `/${segments.join('/')}${trailingSlash ? '/' : ''}`;
}
