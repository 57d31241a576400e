/**
 * A readable stream's bytes in batches, for relays that want one write per batch on every hop
 * after them rather than one per chunk.
 */
import type { Readable } from 'node:stream';

/**
 * A readable stream's bytes in batches: each batch is everything buffered when it is taken (one
 * `read()`), so a slow stream gives each chunk as it comes and a fast one coalesces.
 */
export async function* batches(stream: Readable): AsyncGenerator<Buffer> {
  let wake: (() => void) | null = null;
  let failure: Error | null = null;
  let ended = false;
  const notify = (): void => {
    const w = wake;
    wake = null;
    w?.();
  };
  const onEnd = (): void => {
    ended = true;
    notify();
  };
  const onError = (err: Error): void => {
    failure = err;
    notify();
  };
  stream.on('readable', notify);
  stream.on('end', onEnd);
  stream.on('close', onEnd);
  stream.on('error', onError);
  try {
    for (;;) {
      const chunk = stream.read() as Buffer | null;
      if (chunk !== null) {
        yield chunk;
        continue;
      }
      if (failure !== null) throw failure;
      if (ended || stream.readableEnded || stream.destroyed) return;
      await new Promise<void>((resolve) => (wake = resolve));
    }
  } finally {
    stream.off('readable', notify);
    stream.off('end', onEnd);
    stream.off('close', onEnd);
    stream.off('error', onError);
  }
}
