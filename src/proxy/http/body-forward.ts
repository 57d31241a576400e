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
import type { ByteAccount } from '../budget/sandbox-budget.js';
import { StreamClosedError, type StreamReader, writeAll, writeNow } from './stream-reader.js';

export type Framing =
  { kind: 'none' } | { kind: 'length'; length: number } | { kind: 'chunked' } | { kind: 'close' };

const MAX_CHUNK_LINE = 4096;
const MAX_TRAILER_BYTES = 8192;
const CHUNK_SIZE = /^([0-9a-fA-F]{1,15})[ \t]*(?:;[\x21-\x7e \t]*)?$/;

/**
 * Writes to `dest`, putting `prefix` (a message head) in front of the first write so that a head and
 * a small body leave in one write (one TLS record, one syscall).
 */
class Out {
  constructor(
    private readonly dest: Writable,
    private prefix: Buffer | null,
    private readonly account: ByteAccount | null,
  ) {}
  async write(buf: Buffer): Promise<void> {
    if (this.prefix) {
      const p = this.prefix;
      this.prefix = null;
      return writeAll(this.dest, buf.length ? Buffer.concat([p, buf]) : p, this.account);
    }
    if (buf.length) await writeAll(this.dest, buf, this.account);
  }
  async flush(): Promise<void> {
    await this.write(Buffer.alloc(0));
  }
}

async function copyLength(reader: StreamReader, out: Out, length: number): Promise<void> {
  let left = length;
  while (left > 0) {
    const chunk = await reader.read();
    if (chunk === null) throw new StreamClosedError('connection closed inside a body');
    if (chunk.length > left) {
      reader.unshift(chunk.subarray(left));
      await out.write(chunk.subarray(0, left));
      return;
    }
    left -= chunk.length;
    await out.write(chunk);
  }
}

async function copyChunked(reader: StreamReader, out: Out): Promise<void> {
  for (;;) {
    const line = await reader.readLine(MAX_CHUNK_LINE);
    const m = CHUNK_SIZE.exec(line.toString('latin1'));
    if (!m) throw new HttpHeadError('malformed chunk size line');
    const size = parseInt(m[1] as string, 16);
    // A chunk whose bytes are already here leaves in one write (size line, data, CRLF): one TLS
    // record and one system call instead of three. Nothing is held while waiting for more.
    let pieces: Buffer[] = [line, CRLF];
    const flush = async (): Promise<void> => {
      if (pieces.length === 0) return;
      await out.write(pieces.length === 1 ? (pieces[0] as Buffer) : Buffer.concat(pieces));
      pieces = [];
    };
    if (size === 0) {
      await flush();
      break;
    }
    let left = size;
    while (left > 0) {
      if (reader.buffered === 0) await flush();
      const chunk = await reader.read();
      if (chunk === null) throw new StreamClosedError('connection closed inside a body');
      if (chunk.length > left) {
        reader.unshift(chunk.subarray(left));
        pieces.push(chunk.subarray(0, left));
        left = 0;
      } else {
        pieces.push(chunk);
        left -= chunk.length;
      }
    }
    if (reader.buffered < 2) await flush();
    const end = await reader.readLine(2);
    if (end.length !== 0) throw new HttpHeadError('chunk data not followed by CRLF');
    pieces.push(CRLF);
    await flush();
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
  await out.write(Buffer.from(trailers.length ? trailers.join('\r\n') + '\r\n\r\n' : '\r\n', 'latin1'));
}

async function copyUntilClose(reader: StreamReader, out: Out): Promise<void> {
  for (;;) {
    const chunk = await reader.read();
    if (chunk === null) return;
    await out.write(chunk);
  }
}

/**
 * Forward one body by its framing. `prefix` (the message head, already judged) is written together
 * with the first body bytes when they are already buffered, else on its own at once. `account`
 * holds each write against the sandbox's buffer budget until it reaches the kernel.
 */
export async function forwardBody(
  reader: StreamReader,
  dest: Writable,
  framing: Framing,
  prefix: Buffer | null = null,
  account: ByteAccount | null = null,
): Promise<void> {
  let head = prefix;
  if (head && framing.kind !== 'none' && reader.buffered === 0) {
    // No body bytes yet (Expect: 100-continue, a server-sent event stream): the head must not wait.
    await writeAll(dest, head, account);
    head = null;
  }
  const out = new Out(dest, head, account);
  switch (framing.kind) {
    case 'none':
      break;
    case 'length':
      await copyLength(reader, out, framing.length);
      break;
    case 'chunked':
      await copyChunked(reader, out);
      break;
    case 'close':
      await copyUntilClose(reader, out);
      break;
  }
  await out.flush();
}

/**
 * forwardBody without a promise for the common small message: no body, or a Content-Length body
 * already read in full. Its head and body then leave in one write, as forwardBody would write them,
 * and nothing is awaited unless the destination pushes back (undefined: done). Anything else (a
 * chunked or streamed body, one still arriving) goes to forwardBody. Throws where forwardBody
 * would reject.
 */
export function forwardBodyNow(
  reader: StreamReader,
  dest: Writable,
  framing: Framing,
  prefix: Buffer | null = null,
  account: ByteAccount | null = null,
): Promise<void> | undefined {
  if (framing.kind === 'none') return prefix ? writeNow(dest, prefix, account) : undefined;
  if (framing.kind === 'length') {
    if (framing.length === 0) return prefix ? writeNow(dest, prefix, account) : undefined;
    const chunk = reader.readNow();
    if (chunk !== null) {
      if (chunk.length >= framing.length) {
        // The rest (a pipelined next message) stays for the next read.
        if (chunk.length > framing.length) reader.unshift(chunk.subarray(framing.length));
        const body = chunk.length > framing.length ? chunk.subarray(0, framing.length) : chunk;
        return writeNow(dest, prefix ? joined(prefix, body) : body, account);
      }
      reader.unshift(chunk);
    }
  }
  return forwardBody(reader, dest, framing, prefix, account);
}

/**
 * `head` followed by `body`: the one view over both when they lie next to each other in one buffer
 * (a response's head and body read in one chunk, as they usually are), else a copy of both.
 */
export function joined(head: Buffer, body: Buffer): Buffer {
  if (head.buffer === body.buffer && head.byteOffset + head.length === body.byteOffset)
    return Buffer.from(head.buffer, head.byteOffset, head.length + body.length);
  return Buffer.concat([head, body]);
}

const CRLF = Buffer.from('\r\n');
