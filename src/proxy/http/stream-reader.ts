/**
 * Pull-style reading from a socket (plain, TLS or Unix): heads are read up to a limit, bodies are
 * read chunk by chunk and written on with backpressure, and the leftover bytes can be handed to a raw
 * pipe when a connection turns into a tunnel. Memory per connection is bounded by the head limit and
 * the socket's own high-water mark: nothing here buffers a whole body.
 */
import type { Duplex, Writable } from 'node:stream';
import { HttpHeadError, findHeadEnd, resumeOffset } from './http-fields.js';
import type { ByteAccount } from '../budget/sandbox-budget.js';

export class StreamClosedError extends Error {
  constructor(message = 'connection closed') {
    super(message);
    this.name = 'StreamClosedError';
  }
}

export class StreamReader {
  private pending: Buffer | null = null;
  private ended = false;
  private failure: Error | null = null;
  private waiter: (() => void) | null = null;
  private readonly wake = (): void => {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  };
  private readonly onEnd = (): void => {
    this.ended = true;
    this.wake();
  };
  private readonly onError = (err: Error): void => {
    this.failure = err;
    this.wake();
  };

  constructor(readonly stream: Duplex) {
    stream.on('readable', this.wake);
    stream.on('end', this.onEnd);
    stream.on('close', this.onEnd);
    stream.on('error', this.onError);
  }

  /** The stream can still deliver bytes (it has not ended, failed or been destroyed). */
  get open(): boolean {
    return !this.ended && !this.failure && !this.stream.destroyed && !this.stream.readableEnded;
  }

  /** Bytes that a read would return without waiting. */
  get buffered(): number {
    return (this.pending?.length ?? 0) + this.stream.readableLength;
  }

  /** Resolves once a read would not wait: bytes are buffered, or the stream ended or failed. */
  async waitData(): Promise<void> {
    while (!this.pending && this.stream.readableLength === 0 && this.open) {
      await new Promise<void>((resolve) => {
        this.waiter = resolve;
      });
    }
  }

  /** Next bytes (pending first); null at end of stream. */
  async read(): Promise<Buffer | null> {
    if (this.pending) {
      const p = this.pending;
      this.pending = null;
      return p;
    }
    for (;;) {
      const chunk = this.stream.read() as Buffer | null;
      if (chunk !== null) return chunk;
      if (this.failure) throw this.failure;
      if (this.ended || this.stream.destroyed || this.stream.readableEnded) return null;
      await new Promise<void>((resolve) => {
        this.waiter = resolve;
      });
    }
  }

  /**
   * The bytes a read would return now, without waiting, in read()'s order; null when it would wait
   * or must report an end or a failure (read() does). The request path asks this first: an async
   * read of bytes that are already here costs a promise and a turn of the microtask queue per call.
   */
  readNow(): Buffer | null {
    if (this.pending) {
      const p = this.pending;
      this.pending = null;
      return p;
    }
    return this.stream.read() as Buffer | null;
  }

  /** Put bytes back to be returned by the next read. */
  unshift(buf: Buffer): void {
    if (buf.length === 0) return;
    this.pending = this.pending ? Buffer.concat([buf, this.pending]) : buf;
  }

  /**
   * Read a complete message head (through CRLFCRLF) of at most `limit` bytes. Returns null on a clean
   * end of stream before any byte; throws HttpHeadError on a malformed or oversized head and
   * StreamClosedError when the stream ends in the middle of one.
   */
  async readHead(limit: number): Promise<Buffer | null> {
    let buf: Buffer | null = null;
    for (;;) {
      // Bytes already here are taken at once; a wait is one promise (not read()'s two).
      const chunk = this.readNow();
      if (chunk === null) {
        if (this.failure) throw this.failure;
        if (!(this.ended || this.stream.destroyed || this.stream.readableEnded)) {
          await new Promise<void>((resolve) => {
            this.waiter = resolve;
          });
          continue;
        }
      }
      if (chunk === null) {
        if (buf === null || buf.length === 0) return null;
        throw new StreamClosedError('connection closed inside a message head');
      }
      const from: number = buf ? resumeOffset(buf) : 0;
      buf = buf ? Buffer.concat([buf, chunk]) : chunk;
      const end = findHeadEnd(buf, limit, from);
      if (end >= 0) {
        this.unshift(buf.subarray(end));
        return buf.subarray(0, end);
      }
    }
  }

  /** Read one CRLF-terminated line (without CRLF) of at most `limit` bytes (chunk-size, trailers). */
  async readLine(limit: number): Promise<Buffer> {
    let buf: Buffer | null = null;
    for (;;) {
      const chunk = await this.read();
      if (chunk === null) throw new StreamClosedError('connection closed inside a line');
      const from = buf ? Math.max(0, buf.length - 1) : 0;
      buf = buf ? Buffer.concat([buf, chunk]) : chunk;
      const lf = buf.indexOf(0x0a, from);
      if (lf >= 0) {
        if (lf === 0 || buf[lf - 1] !== 0x0d) throw new HttpHeadError('bare LF in chunked framing');
        this.unshift(buf.subarray(lf + 1));
        const line = buf.subarray(0, lf - 1);
        if (line.includes(0x0d)) throw new HttpHeadError('bare CR in chunked framing');
        return line;
      }
      if (buf.length > limit) throw new HttpHeadError('chunked framing line too long');
    }
  }

  /** Stop reading: remove our listeners and return the bytes not consumed yet. */
  detach(): Buffer {
    this.stream.off('readable', this.wake);
    this.stream.off('end', this.onEnd);
    this.stream.off('close', this.onEnd);
    this.stream.off('error', this.onError);
    const rest = this.pending ?? Buffer.alloc(0);
    this.pending = null;
    return rest;
  }
}

/**
 * Write with backpressure: resolves when the destination can take more. With `account`, the bytes
 * are held against the sandbox's buffer budget until the destination has handed them to the kernel.
 */
export async function writeAll(
  dest: Writable,
  buf: Buffer | string,
  account: ByteAccount | null = null,
): Promise<void> {
  const wait = writeNow(dest, buf, account);
  if (wait) await wait;
}

/**
 * writeAll without a promise when none is needed: undefined when the destination can take more at
 * once, else a promise that resolves when it can. Throws StreamClosedError (synchronously) when the
 * destination is closed.
 */
export function writeNow(
  dest: Writable,
  buf: Buffer | string,
  account: ByteAccount | null = null,
): Promise<void> | undefined {
  if (dest.destroyed || dest.writableEnded) throw new StreamClosedError('destination closed');
  let written: boolean;
  if (account === null) {
    written = dest.write(buf);
  } else {
    const n = Buffer.byteLength(buf);
    account.hold(n);
    written = dest.write(buf, () => account.release(n));
  }
  if (written) return undefined;
  return new Promise<void>((resolve, reject) => {
    const cleanup = (): void => {
      dest.off('drain', onDrain);
      dest.off('close', onClose);
      dest.off('error', onError);
    };
    const onDrain = (): void => {
      cleanup();
      resolve();
    };
    const onClose = (): void => {
      cleanup();
      reject(new StreamClosedError('destination closed'));
    };
    const onError = (err: Error): void => {
      cleanup();
      reject(err);
    };
    dest.on('drain', onDrain);
    dest.on('close', onClose);
    dest.on('error', onError);
  });
}
