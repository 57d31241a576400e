/**
 * What a client speaks inside a CONNECT tunnel, decided from its first bytes: TLS, HTTP, or
 * something else.
 *
 * Threat: a request the proxy would judge (Host must name the CONNECT host, placeholders are
 * checked) slipped through as "not HTTP" — by splitting the request line over several writes (the
 * first read holds `GE`), by a leading empty line (servers skip CRLF before a request line), by
 * leading blanks, or by a method the proxy does not expect. Rules:
 * - bytes are buffered until the answer is certain, never decided on a prefix; nothing is
 *   forwarded meanwhile, and the idle timeout of the connection bounds the wait;
 * - TLS: the first byte is a handshake record (0x16);
 * - HTTP: after any CR, LF, SP or HTAB, a token (any length, up to the head limit) followed by SP
 *   or HTAB — every form a server could take for a request line. The HTTP parser then judges it
 *   whole, and refuses what it does not accept (a leading empty line, a long method) with a 400;
 * - the one exception is an SSH identification line (`SSH-2.0-… comment`), a token and a blank too:
 *   it is not HTTP when its whole first line holds no `HTTP/`;
 * - anything else (a binary protocol, a first byte that is no token character) is not HTTP.
 */
import type { StreamReader } from './stream-reader.js';

export type TunnelProtocol = 'tls' | 'http' | 'other' | 'closed';

/** How far bytes are buffered before deciding: the HTTP head limit. */
const MAX_SNIFF = 16 * 1024;

const TCHAR = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~") TCHAR[c.charCodeAt(0)] = 1;
for (let c = 0x30; c <= 0x39; c++) TCHAR[c] = 1;
for (let c = 0x41; c <= 0x5a; c++) TCHAR[c] = 1;
for (let c = 0x61; c <= 0x7a; c++) TCHAR[c] = 1;

const isBlank = (b: number): boolean => b === 0x0d || b === 0x0a || b === 0x20 || b === 0x09;

/** The decision for `buf` so far, or null when more bytes are needed. */
export function classifyStart(buf: Buffer): Exclude<TunnelProtocol, 'closed'> | null {
  if (buf.length === 0) return null;
  if (buf[0] === 0x16) return 'tls';
  let i = 0;
  while (i < buf.length && isBlank(buf[i] as number)) i++;
  if (i === buf.length) return buf.length >= MAX_SNIFF ? 'http' : null;
  const tokenStart = i;
  while (i < buf.length && TCHAR[buf[i] as number]) i++;
  if (i === buf.length) return buf.length >= MAX_SNIFF ? 'http' : null;
  const end = buf[i] as number;
  if (i === tokenStart || (end !== 0x20 && end !== 0x09)) return 'other';
  if (!buf.subarray(tokenStart, tokenStart + 4).equals(SSH_PREFIX)) return 'http';
  const eol = buf.indexOf(0x0a, i);
  if (eol < 0) return buf.length >= MAX_SNIFF ? 'http' : null;
  return buf.subarray(tokenStart, eol).includes(HTTP_VERSION) ? 'http' : 'other';
}

const SSH_PREFIX = Buffer.from('SSH-');
const HTTP_VERSION = Buffer.from('HTTP/');

/**
 * Reads the client's first bytes until the protocol is known; every byte read is put back, so the
 * next reader sees the stream from its start.
 */
export async function sniffProtocol(reader: StreamReader): Promise<TunnelProtocol> {
  let buf: Buffer = Buffer.alloc(0);
  for (;;) {
    const chunk = await reader.read();
    if (chunk === null) {
      reader.unshift(buf);
      return buf.length === 0 ? 'closed' : 'other';
    }
    buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
    const verdict = classifyStart(buf);
    if (verdict !== null) {
      reader.unshift(buf);
      return verdict;
    }
  }
}
