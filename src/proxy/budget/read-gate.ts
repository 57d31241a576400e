/**
 * Stopping and restarting the reads of a socket at its libuv handle, whatever reads it (a flowing
 * pipe in raw-relay.ts, a StreamReader pulling with read()).
 *
 * Why not `pause()`: a paused net.Socket keeps reading until its buffer reaches the high-water mark
 * (plus one read of up to 64 KiB), and a pulling reader's next read() starts it again. A sandbox
 * over its buffer budget must make the proxy read nothing more from any of its sockets, however
 * many it has open, so the reads are stopped where they happen: `handle.readStop()`, with the
 * stream's `_read` disarmed (an own property) so that nothing restarts them. Reopening restores
 * `_read` and, when a read was asked for meanwhile (the stream records it in `reading`) or the
 * stream is flowing, calls it, which restarts the handle. A stream paused by its own consumer
 * stays paused: reopening never reads on its behalf.
 *
 * This leans on two internals that raw-relay.ts's hand-off to the pump uses as well: a socket's
 * `_handle` (`reading`, `readStop()`) and the readable state's `reading` and `flowing` flags.
 */
import type { Duplex } from 'node:stream';

export interface ReadGate {
  /** Stop reading now (idempotent). */
  close(): void;
  /** Read again if the stream wants bytes (idempotent). */
  open(): void;
}

interface Internals {
  _handle?: { reading?: boolean; readStop?: () => number } | null;
  _read: (n: number) => void;
  _readableState?: { reading?: boolean; flowing?: boolean | null; ended?: boolean };
  destroyed: boolean;
  readableHighWaterMark: number;
}

const disarmed = (): void => {};

export function readGate(stream: Duplex): ReadGate {
  const s = stream as unknown as Internals;
  let closed = false;
  return {
    close() {
      if (closed || s.destroyed) return;
      closed = true;
      s._read = disarmed;
      const handle = s._handle;
      if (handle && typeof handle.readStop === 'function' && handle.reading) {
        handle.reading = false;
        handle.readStop();
      }
    },
    open() {
      if (!closed) return;
      closed = false;
      delete (s as { _read?: unknown })._read;
      if (s.destroyed) return;
      const state = s._readableState;
      if (state === undefined || state.ended) return;
      // A read was asked for while closed (swallowed by the disarmed _read, so the stream still
      // believes it is under way), or the stream flows: start the handle again.
      if (state.reading || state.flowing === true) s._read(s.readableHighWaterMark);
    },
  };
}
