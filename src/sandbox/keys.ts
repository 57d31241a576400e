/**
 * Random names and content keys for the start path, without Node's crypto: loading it starts
 * OpenSSL, ~4–6 ms of CPU that a one-shot `carapace run` with the default policy (no network, no
 * TLS) otherwise pays for nothing else.
 *
 * - `randomHex` reads the kernel's generator (/dev/urandom, the source crypto.randomBytes uses too),
 *   a pool at a time.
 * - `contentKey` is a fast, non-cryptographic 64-bit hash for naming files by what they hold. It
 *   is not collision-resistant: every file named by it is checked to hold what its user expects
 *   (the content, or the source it was made from) before it is used, so a collision costs a
 *   rewrite or a cache miss, never a wrong file.
 */
import { closeSync, openSync, readSync } from 'node:fs';

const POOL_BYTES = 256;
let pool: Buffer = Buffer.alloc(0);
let used = 0;

/** `bytes` random bytes from the kernel, as lower-case hex. */
export function randomHex(bytes: number): string {
  if (bytes > POOL_BYTES) return fill(Buffer.alloc(bytes)).toString('hex');
  if (used + bytes > pool.length) {
    pool = fill(Buffer.alloc(POOL_BYTES));
    used = 0;
  }
  const out = pool.subarray(used, used + bytes).toString('hex');
  pool.fill(0, used, used + bytes); // handed out once
  used += bytes;
  return out;
}

function fill(buf: Buffer): Buffer {
  const fd = openSync('/dev/urandom', 'r');
  try {
    let got = 0;
    while (got < buf.length) got += readSync(fd, buf, got, buf.length - got, null);
  } finally {
    closeSync(fd);
  }
  return buf;
}

/**
 * A 64-bit key (16 hex digits) of the parts, each followed by a NUL: two 32-bit FNV-1a lanes over
 * the UTF-16 code units with different offsets and a final avalanche. For names, not for trust.
 */
export function contentKey(...parts: (string | Uint8Array)[]): string {
  let a = 0x811c9dc5;
  let b = 0x050c5d1f;
  const mix = (unit: number) => {
    a = Math.imul(a ^ unit, 0x01000193);
    b = Math.imul(b ^ unit, 0x01000193) ^ (a >>> 15);
  };
  for (const part of parts) {
    if (typeof part === 'string') for (let i = 0; i < part.length; i++) mix(part.charCodeAt(i));
    else for (const byte of part) mix(byte);
    mix(0);
  }
  const fin = (h: number) => {
    h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
    h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
    return (h ^ (h >>> 16)) >>> 0;
  };
  return (
    fin(a).toString(16).padStart(8, '0') +
    fin(b ^ a)
      .toString(16)
      .padStart(8, '0')
  );
}
