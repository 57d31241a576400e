/**
 * The `method` of an L7 rule. RFC 9110 §9.1 makes a method any token (`tchar`s: letters, digits
 * and ``!#$%&'*+-.^_`|~``), so a rule may name `M-SEARCH` (SSDP) or a server's own method; the
 * proxy reads any token method too (src/proxy/http/http-head.ts). `*` alone matches every method; a `*`
 * inside a method is refused, because it would read as a wildcard and match only itself.
 *
 * Methods compare case-insensitively, the rule's and the request's both upper-cased
 * (compile/request-rules.ts), so the check here does the same. A method that is valid but no
 * server is likely to know (`GTE`) is a warning, not an error: it is almost always a typo, and
 * the rule it is in then matches nothing the agent sends.
 */
import type { PolicyIssue, PolicyPath } from '../diagnostics.js';
import { closest } from './schema-issues.js';

/** A rule's method: `*`, or a token without `*` (any case). */
export const METHOD_PATTERN = /^(?:\*|[!#$%&'+\-.^_`|~0-9A-Za-z]+)$/;

/**
 * The IANA HTTP Method Registry, then methods in common use outside it (UPnP/SSDP, GENA,
 * cache purges, Icecast). The order breaks ties between suggestions: common methods first.
 */
export const KNOWN_METHODS: readonly string[] = [
  'GET',
  'HEAD',
  'POST',
  'PUT',
  'PATCH',
  'DELETE',
  'OPTIONS',
  'CONNECT',
  'TRACE',
  'QUERY',
  'ACL',
  'BASELINE-CONTROL',
  'BIND',
  'CHECKIN',
  'CHECKOUT',
  'COPY',
  'LABEL',
  'LINK',
  'LOCK',
  'MERGE',
  'MKACTIVITY',
  'MKCALENDAR',
  'MKCOL',
  'MKREDIRECTREF',
  'MKWORKSPACE',
  'MOVE',
  'ORDERPATCH',
  'PRI',
  'PROPFIND',
  'PROPPATCH',
  'REBIND',
  'REPORT',
  'SEARCH',
  'UNBIND',
  'UNCHECKOUT',
  'UNLINK',
  'UNLOCK',
  'UPDATE',
  'UPDATEREDIRECTREF',
  'VERSION-CONTROL',
  'M-SEARCH',
  'NOTIFY',
  'SUBSCRIBE',
  'UNSUBSCRIBE',
  'PURGE',
  'SOURCE',
];
const KNOWN = new Set(KNOWN_METHODS);

/** Why `method` cannot be a rule's method, or null when it can. */
export function methodProblem(method: string): string | null {
  if (METHOD_PATTERN.test(method)) return null;
  if (method.includes('*') && METHOD_PATTERN.test(method.replaceAll('*', 'X')))
    return `method "${method}": "*" stands alone for every method; a method is not a pattern`;
  return `method "${method}" must be an HTTP method (a token such as GET or M-SEARCH), or "*" for every method`;
}

/** A warning for a valid method no server is likely to know, naming the nearest known one. */
export function unknownMethodWarning(method: string): string | null {
  const upper = method.toUpperCase();
  if (upper === '*' || KNOWN.has(upper) || !METHOD_PATTERN.test(method)) return null;
  const guess = closest(upper, KNOWN_METHODS);
  return (
    `method "${method}" is not a registered or common HTTP method` +
    (guess !== null ? ` (did you mean "${guess}"?)` : '') +
    `: the rule matches only requests whose method is ${upper}`
  );
}

/** The unknown-method warnings of a `network_policies` map that has passed validation. */
export function methodWarnings(
  policies: Readonly<Record<string, { endpoints: readonly MethodHolder[] }>> | undefined,
  base: PolicyPath = ['network_policies'],
): PolicyIssue[] {
  const issues: PolicyIssue[] = [];
  const check = (method: string, path: PolicyPath) => {
    const message = unknownMethodWarning(method);
    if (message !== null) issues.push({ path, message });
  };
  for (const [key, entry] of Object.entries(policies ?? {})) {
    entry.endpoints.forEach((ep, i) => {
      const at = [...base, key, 'endpoints', i];
      ep.rules?.forEach((r, j) => check(r.allow.method, [...at, 'rules', j, 'allow', 'method']));
      ep.deny_rules?.forEach((r, j) => check(r.method, [...at, 'deny_rules', j, 'method']));
    });
  }
  return issues;
}

interface MethodHolder {
  rules?: readonly { allow: { method: string } }[] | undefined;
  deny_rules?: readonly { method: string }[] | undefined;
}
