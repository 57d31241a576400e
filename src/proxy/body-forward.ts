/**
 * Streams a message body from one connection to another by its framing, forwarding the bytes as
 * received and never buffering a whole body.
 *
 * Threat: request smuggling through the chunked coding (a chunk-size both sides read differently, a
 * chunk without its CRLF, a trailer that is really a second request). The chunk-size line must be
 * 1–16 hex digits, optionally followed by `;` extensions of visible characters; the data must be
 * followed by exactly CRLF; trailers are limited in number and size and parsed as header fields.
 */
import type { Writable } from 'node:stream';
import { HttpHeadError, parseHeaderLines } from './http-fields.js';
import { StreamClosedError, type StreamReader, writeAll } from './stream-reader.js';

export type Framing =
  { kind: 'none' } | { kind: 'length'; length: number } | { kind: 'chunked' } | { kind: 'close' };

const MAX_CHUNK_LINE = 4096;
const MAX_TRAILER_BYTES = 8192;
const CHUNK_SIZE = /^([0-9a-fA-F]{1,15})[ \t]*(?:;[\x21-\x7e \t]*)?$/;

export async function forwardLength(reader: StreamReader, dest: Writable, length: number): Promise<void> {
  let left = length;
  while (left > 0) {
    const chunk = await reader.read();
    if (chunk === null) throw new StreamClosedError('connection closed inside a body');
    if (chunk.length > left) {
      reader.unshift(chunk.subarray(left));
      await writeAll(dest, chunk.subarray(0, left));
      return;
    }
    left -= chunk.length;
    await writeAll(dest, chunk);
  }
}

export async function forwardChunked(reader: StreamReader, dest: Writable): Promise<void> {
  for (;;) {
    const line = await reader.readLine(MAX_CHUNK_LINE);
    const m = CHUNK_SIZE.exec(line.toString('latin1'));
    if (!m) throw new HttpHeadError('malformed chunk size line');
    const size = parseInt(m[1] as string, 16);
    await writeAll(dest, Buffer.concat([line, CRLF]));
    if (size === 0) break;
    await forwardLength(reader, dest, size);
    const end = await reader.readLine(2);
    if (end.length !== 0) throw new HttpHeadError('chunk data not followed by CRLF');
    await writeAll(dest, CRLF);
  }
  // Trailer section: header fields until an empty line.
  let total = 0;
  const trailers: string[] = [];
  for (;;) {
    const line = await reader.readLine(MAX_TRAILER_BYTES);
    total += line.length + 2;
    if (total > MAX_TRAILER_BYTES) throw new HttpHeadError('chunked trailer section too large');
    if (line.length === 0) break;
    trailers.push(line.toString('latin1'));
  }
  parseHeaderLines(trailers);
  await writeAll(dest, trailers.length ? trailers.join('\r\n') + '\r\n\r\n' : '\r\n');
}

export async function forwardUntilClose(reader: StreamReader, dest: Writable): Promise<void> {
  for (;;) {
    const chunk = await reader.read();
    if (chunk === null) return;
    await writeAll(dest, chunk);
  }
}

export async function forwardBody(reader: StreamReader, dest: Writable, framing: Framing): Promise<void> {
  switch (framing.kind) {
    case 'none':
      return;
    case 'length':
      return forwardLength(reader, dest, framing.length);
    case 'chunked':
      return forwardChunked(reader, dest);
    case 'close':
      return forwardUntilClose(reader, dest);
  }
}

const CRLF = Buffer.from('\r\n');
