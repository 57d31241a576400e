/**
 * The common part of HTTP/1.1 message heads: finding the end of a head in a byte stream, splitting
 * lines, and parsing header fields strictly (RFC 9112 §2.2, §5).
 *
 * Threat: request smuggling and header injection. Two parsers (ours and the upstream's) must never
 * disagree about where a header ends or what it says, so anything two parsers could read differently
 * is an error here: bare CR, bare LF, obs-fold (a line starting with SP/HTAB), whitespace between a
 * field name and its colon, NUL or other control characters in a value, non-token field names.
 * Every function is total: on any input it returns or throws HttpHeadError, never anything else.
 */

export type HeadStatus = 400 | 413 | 414 | 431 | 501 | 505;

export class HttpHeadError extends Error {
  constructor(
    /** Short, stable, safe to log and to return in a 400 body (never contains input bytes). */
    readonly reason: string,
    readonly status: HeadStatus = 400,
  ) {
    super(reason);
    this.name = 'HttpHeadError';
  }
}

export interface HeaderField {
  /** As sent (case preserved for forwarding). */
  name: string;
  /** Lower case, for lookups. */
  lname: string;
  /** With surrounding whitespace removed. */
  value: string;
}

const CR = 0x0d;
const LF = 0x0a;

/**
 * Index just past the blank line that ends the head (`\r\n\r\n`) in `buf`, or -1 if the head is not
 * complete yet. Throws when a bare LF appears (early: no point reading more) or when `limit` bytes
 * are buffered without an end. `from` lets a caller resume a scan.
 */
export function findHeadEnd(buf: Buffer, limit: number, from = 0): number {
  const end = Math.min(buf.length, limit);
  for (let i = Math.max(0, from); i < end; i++) {
    const b = buf[i];
    if (b === LF) {
      if (i === 0 || buf[i - 1] !== CR) throw new HttpHeadError('bare LF in message head');
      if (i >= 3 && buf[i - 2] === LF && buf[i - 3] === CR) return i + 1;
    } else if (b === CR && i + 1 < buf.length && buf[i + 1] !== LF) {
      throw new HttpHeadError('bare CR in message head');
    }
  }
  if (buf.length >= limit) throw new HttpHeadError('message head too large', 431);
  return -1;
}

/** Where a scan may safely resume after more bytes arrive (re-checks the last 3 bytes). */
export function resumeOffset(buf: Buffer): number {
  return Math.max(0, buf.length - 3);
}

/** Split a complete head (ending in CRLFCRLF) into lines without their CRLF. */
export function splitHeadLines(head: string): string[] {
  if (!head.endsWith('\r\n\r\n')) throw new HttpHeadError('incomplete message head');
  const lines = head.slice(0, -4).split('\r\n');
  for (const line of lines) {
    if (line.includes('\r') || line.includes('\n')) throw new HttpHeadError('bare CR or LF in message head');
  }
  return lines;
}

const TOKEN_CHARS = new Uint8Array(128);
for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") {
  TOKEN_CHARS[c.charCodeAt(0)] = 1;
}

export function isToken(s: string): boolean {
  if (s.length === 0) return false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 128 || TOKEN_CHARS[c] !== 1) return false;
  }
  return true;
}

/** field-value characters: HTAB, SP, VCHAR, obs-text. Everything else (NUL, CR, LF, CTLs, DEL) is refused. */
function valueIsClean(v: string): boolean {
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i);
    if (c === 0x09) continue;
    if (c < 0x20 || c === 0x7f || c > 0xff) return false;
  }
  return true;
}

export const MAX_HEADER_FIELDS = 128;

/** Remove optional whitespace (SP, HTAB) at both ends. */
/**
 * Strips HTTP's optional whitespace (space and tab) from both ends. Never String.trim: it also
 * strips a no-break space (0xA0 read as latin1) and other Unicode spaces, which a server does not,
 * so `Transfer-Encoding: chunked\xa0` would frame as chunked here and as something else there.
 */
export function trimOws(v: string): string {
  let a = 0;
  let b = v.length;
  while (a < b && (v.charCodeAt(a) === 0x20 || v.charCodeAt(a) === 0x09)) a++;
  while (b > a && (v.charCodeAt(b - 1) === 0x20 || v.charCodeAt(b - 1) === 0x09)) b--;
  return a === 0 && b === v.length ? v : v.slice(a, b);
}

/** The header fields of `lines` from index `from` (a head's lines after its start line). */
export function parseHeaderLines(lines: readonly string[], from = 0): HeaderField[] {
  if (lines.length - from > MAX_HEADER_FIELDS) throw new HttpHeadError('too many header fields', 431);
  const out: HeaderField[] = [];
  for (let i = from; i < lines.length; i++) {
    const line = lines[i] as string;
    const c0 = line.charCodeAt(0);
    if (c0 === 0x20 || c0 === 0x09) throw new HttpHeadError('obsolete line folding (obs-fold) in header');
    const colon = line.indexOf(':');
    if (colon <= 0) throw new HttpHeadError('header line without a field name and colon');
    const name = line.slice(0, colon);
    if (!isToken(name)) throw new HttpHeadError('invalid character in header field name');
    const raw = line.slice(colon + 1);
    if (!valueIsClean(raw)) throw new HttpHeadError('control character in header field value');
    out.push({ name, lname: name.toLowerCase(), value: trimOws(raw) });
  }
  return out;
}

/** Comma-separated list elements of every field named `lname`, trimmed, empty elements dropped. */
export function listValues(headers: readonly HeaderField[], lname: string): string[] {
  const out: string[] = [];
  for (const h of headers) {
    if (h.lname !== lname) continue;
    for (const part of h.value.split(',')) {
      const t = trimOws(part);
      if (t) out.push(t);
    }
  }
  return out;
}

export function fieldsNamed(headers: readonly HeaderField[], lname: string): HeaderField[] {
  return headers.filter((h) => h.lname === lname);
}

export interface BodyFraming {
  /** `length` with `contentLength`, `chunked`, or `none` (requests) / `close` (responses read to EOF). */
  kind: 'none' | 'length' | 'chunked' | 'close';
  contentLength: number;
}

/**
 * Content-Length from all its fields: every element must be 1*DIGIT and all must be equal.
 * Returns null when absent.
 */
export function contentLengthOf(headers: readonly HeaderField[]): number | null {
  // The common case, one field of 1–15 digits, read without the general walk's split, trim, regex
  // and string round trip (every response of a kept-alive connection has one): same result.
  let only: HeaderField | null = null;
  for (const h of headers) {
    if (h.lname !== 'content-length') continue;
    if (only !== null) {
      only = null;
      break;
    }
    only = h;
  }
  if (only !== null) {
    const n = digitsValue(only.value);
    if (n >= 0) return n;
  }
  const fields = fieldsNamed(headers, 'content-length');
  if (fields.length === 0) return null;
  let value: string | null = null;
  for (const f of fields) {
    for (const part of f.value.split(',')) {
      const t = trimOws(part);
      if (!/^[0-9]{1,15}$/.test(t)) throw new HttpHeadError('invalid Content-Length');
      const norm = String(Number(t));
      if (value !== null && value !== norm) throw new HttpHeadError('differing Content-Length values');
      value = norm;
    }
  }
  if (value === null) throw new HttpHeadError('empty Content-Length');
  return Number(value);
}

/** The value of 1–15 ASCII digits, else -1. */
function digitsValue(v: string): number {
  if (v.length === 0 || v.length > 15) return -1;
  let n = 0;
  for (let i = 0; i < v.length; i++) {
    const d = v.charCodeAt(i) - 0x30;
    if (d < 0 || d > 9) return -1;
    n = n * 10 + d;
  }
  return n;
}

/** True when Transfer-Encoding is exactly `chunked`; false when absent; throws on anything else. */
export function isChunkedOnly(headers: readonly HeaderField[]): boolean {
  const fields = fieldsNamed(headers, 'transfer-encoding');
  if (fields.length === 0) return false;
  const codings = listValues(headers, 'transfer-encoding').map((c) => c.toLowerCase());
  if (codings.length === 1 && codings[0] === 'chunked') return true;
  if (codings.length === 0) throw new HttpHeadError('empty Transfer-Encoding');
  if (codings[codings.length - 1] !== 'chunked')
    throw new HttpHeadError('Transfer-Encoding does not end in chunked');
  throw new HttpHeadError('unsupported Transfer-Encoding (only "chunked" is accepted)', 501);
}

/** Connection options, lower case. */
export function connectionTokens(headers: readonly HeaderField[]): Set<string> {
  return new Set(listValues(headers, 'connection').map((t) => t.toLowerCase()));
}
