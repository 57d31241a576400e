/**
 * The canonical form of a request path, which is both what the policy judges and what is forwarded.
 *
 * Threat: a path the policy reads as allowed but the upstream reads as another resource:
 * `/repos/x/../../admin`, `/repos%2F..%2Fadmin`, `/a/%2e%2e/admin`, `\admin` on servers that treat a
 * backslash as a slash, `/public/..;/admin` on servers that drop path parameters (Tomcat, Jetty,
 * Spring), `//admin` on servers that merge slashes (nginx, most frameworks). One reading is chosen
 * per form, and because the canonical path is also what goes upstream, the upstream reads what was
 * judged. Per form (docs/proxy.md, "Paths"):
 * - percent-escapes must be well-formed; escapes of unreserved characters (ALPHA DIGIT - . _ ~) are
 *   decoded, all others are kept with upper-case hex;
 * - an encoded slash (`%2F`: npm names a scoped package `/@scope%2fname`) is kept inside its
 *   segment, and because servers disagree on it (some decode it into a separator) the forwarded
 *   path is also read with it decoded (`slashReading`): the request judge allows the request only
 *   if the rules allow both readings. The names it separates must be plain (not empty, `.` or
 *   `..`), so that no server can merge or resolve the decoded reading into a third path;
 * - refused, because servers disagree on them: an encoded backslash (`%5C`), an encoded
 *   path-parameter separator (`%3B`), an encoded control character (`%00`–`%1F`, `%7F`), a
 *   double-encoded escape (`%25` followed by two hex digits: a server that decodes twice sees
 *   `%2F` become `/`), escapes whose bytes are not UTF-8 (overlong forms such as `%C0%AF` decode to
 *   `/` on some servers), a raw backslash and a fragment;
 * - normalised: `;parameters` are removed from every segment before dot segments are resolved (as
 *   the servers that honour them do; so `..;` is `..` and is resolved, never forwarded), repeated
 *   slashes are merged (an empty segment is dropped, a trailing slash kept), dot segments are
 *   removed after decoding; a `..` that would climb above the root is refused;
 * - letter case is kept (paths are case-sensitive for most servers); the policy matches `deny_rules`
 *   without regard to case, so `/ADMIN` cannot slip past a rule for `/admin` on a server that folds
 *   case (src/policy/compile/request-rules.ts).
 */

export type CanonicalTarget =
  | {
      ok: true;
      path: string;
      query: string;
      /** The path as a server that decodes `%2F` into `/` reads it; only when it differs. */
      slashReading?: string;
    }
  | { ok: false; reason: string };

const UNRESERVED = /[A-Za-z0-9\-._~]/;
const HEX = /^[0-9A-Fa-f]{2}$/;
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Decode unreserved escapes, refuse the ambiguous ones; returns the path or the reason. */
function normaliseEscapes(path: string): string | { reason: string } {
  let out = '';
  let escaped: number[] | null = null;
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
    if (code === 0x5c) return { reason: 'encoded backslash (%5C) in path' };
    if (code === 0) return { reason: 'encoded NUL in path' };
    if (code < 0x20 || code === 0x7f) return { reason: 'encoded control character in path' };
    if (code === 0x3b) return { reason: 'encoded semicolon (%3B) in path' };
    if (code === 0x25 && HEX.test(path.slice(i + 3, i + 5)))
      return { reason: 'double-encoded escape (%25XX) in path' };
    if (code >= 0x80) (escaped ??= []).push(code);
    const ch = String.fromCharCode(code);
    out += UNRESERVED.test(ch) ? ch : `%${hex.toUpperCase()}`;
    i += 2;
  }
  if (escaped !== null && !isUtf8(path)) return { reason: 'percent-escapes in path that are not UTF-8' };
  return out;
}

/** Whether the bytes the escapes of `path` stand for, with its other characters, are valid UTF-8. */
function isUtf8(path: string): boolean {
  const bytes: number[] = [];
  for (let i = 0; i < path.length; i++) {
    if (path[i] === '%') {
      bytes.push(parseInt(path.slice(i + 1, i + 3), 16));
      i += 2;
    } else {
      bytes.push(path.charCodeAt(i));
    }
  }
  try {
    utf8.decode(Uint8Array.from(bytes));
    return true;
  } catch {
    return false;
  }
}

/**
 * Segments with `;parameters` dropped, empty segments merged (a trailing one kept: the trailing
 * slash), dot segments resolved; null when `..` climbs above the root.
 */
function resolveSegments(path: string): string | null {
  const input = path.split('/').slice(1);
  const out: string[] = [];
  const last = input.length - 1;
  for (let i = 0; i < input.length; i++) {
    const raw = input[i] as string;
    const semi = raw.indexOf(';');
    const seg = semi < 0 ? raw : raw.slice(0, semi);
    if (seg === '.') {
      if (i === last) out.push('');
      continue;
    }
    if (seg === '..') {
      if (out.length === 0) return null;
      out.pop();
      if (i === last) out.push('');
      continue;
    }
    if (seg === '' && i !== last) continue;
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
  const path = resolveSegments(escaped);
  if (path === null) return { ok: false, reason: 'path climbs above the root (..)' };
  if (/%(?![0-9A-Fa-f]{2})/.test(query)) return { ok: false, reason: 'malformed percent-escape in query' };
  if (!path.includes('%2F')) return { ok: true, path, query };
  // The decoded reading is of the path that goes upstream. Its %2F must separate plain names: an
  // empty, `.` or `..` piece would be merged or resolved differently by servers that decode it
  // before or after they remove dot segments, or never merge slashes.
  for (const segment of path.split('/')) {
    if (!segment.includes('%2F')) continue;
    if (segment.split('%2F').some((piece) => piece === '' || piece === '.' || piece === '..'))
      return { ok: false, reason: `encoded slash (%2F) next to an empty, . or .. name in ${segment}` };
  }
  return { ok: true, path, query, slashReading: path.replaceAll('%2F', '/') };
}

/** The target to forward: canonical path plus the query as sent. */
export function formatTarget(path: string, query: string, hadQuery: boolean): string {
  return hadQuery ? `${path}?${query}` : path;
}
