/**
 * The canonical form of a request path, which is both what the policy judges and what is forwarded.
 *
 * Threat: a path the policy reads as allowed but the upstream reads as another resource:
 * `/repos/x/../../admin`, `/repos%2F..%2Fadmin`, `/a/%2e%2e/admin`, `\admin` on servers that treat a
 * backslash as a slash. Rules (RFC 3986 equivalences only, so forwarding the canonical form never
 * changes what a conforming server serves):
 * - percent-escapes must be well-formed; escapes of unreserved characters (ALPHA DIGIT - . _ ~) are
 *   decoded, all others are kept with upper-case hex;
 * - an encoded slash or backslash (`%2F`, `%5C`), an encoded NUL (`%00`), a raw backslash and a
 *   fragment are refused: servers disagree on them;
 * - dot segments are removed after decoding; a `..` that would climb above the root is refused.
 */

export type CanonicalTarget = { ok: true; path: string; query: string } | { ok: false; reason: string };

const UNRESERVED = /[A-Za-z0-9\-._~]/;
const HEX = /^[0-9A-Fa-f]{2}$/;

function normaliseEscapes(path: string): string | { reason: string } {
  let out = '';
  for (let i = 0; i < path.length; i++) {
    const c = path[i] as string;
    if (c === '\\') return { reason: 'backslash in path' };
    if (c !== '%') {
      out += c;
      continue;
    }
    const hex = path.slice(i + 1, i + 3);
    if (!HEX.test(hex)) return { reason: 'malformed percent-escape in path' };
    const code = parseInt(hex, 16);
    if (code === 0x2f || code === 0x5c) return { reason: 'encoded slash or backslash (%2F, %5C) in path' };
    if (code === 0) return { reason: 'encoded NUL in path' };
    const ch = String.fromCharCode(code);
    out += UNRESERVED.test(ch) ? ch : `%${hex.toUpperCase()}`;
    i += 2;
  }
  return out;
}

function removeDotSegments(path: string): string | null {
  const input = path.split('/').slice(1);
  const out: string[] = [];
  for (let i = 0; i < input.length; i++) {
    const seg = input[i] as string;
    const last = i === input.length - 1;
    if (seg === '.') {
      if (last) out.push('');
      continue;
    }
    if (seg === '..') {
      if (out.length === 0) return null;
      out.pop();
      if (last) out.push('');
      continue;
    }
    out.push(seg);
  }
  return '/' + out.join('/');
}

/** Canonicalise an origin-form request target (`/path?query`). */
export function canonicalTarget(target: string): CanonicalTarget {
  if (target.includes('#')) return { ok: false, reason: 'fragment in request target' };
  const q = target.indexOf('?');
  const rawPath = q < 0 ? target : target.slice(0, q);
  const query = q < 0 ? '' : target.slice(q + 1);
  if (!rawPath.startsWith('/')) return { ok: false, reason: 'path does not start with /' };
  const escaped = normaliseEscapes(rawPath);
  if (typeof escaped !== 'string') return { ok: false, reason: escaped.reason };
  const path = removeDotSegments(escaped);
  if (path === null) return { ok: false, reason: 'path climbs above the root (..)' };
  if (/%(?![0-9A-Fa-f]{2})/.test(query)) return { ok: false, reason: 'malformed percent-escape in query' };
  return { ok: true, path, query };
}

/** The target to forward: canonical path plus the query as sent. */
export function formatTarget(path: string, query: string, hadQuery: boolean): string {
  return hadQuery ? `${path}?${query}` : path;
}
