/**
 * `sandbox logs --tail N` reads from the end (src/gateway/sandboxes/last-lines.ts): the same lines
 * as reading every file forwards with node:readline and keeping the last N, for lines of every
 * length around the read size, `\r\n`, a last line without its `\n`, empty lines and empty files,
 * with and without a filter, over several files.
 */
import { closeSync, createReadStream, mkdtempSync, openSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { describe, expect, it } from 'vitest';
import { lastLines } from '../../src/gateway/sandboxes/last-lines.js';

async function forwards(paths: string[], keep: (t: string) => boolean, tail: number): Promise<string[]> {
  const kept: string[] = [];
  for (const path of paths) {
    for await (const text of createInterface({ input: createReadStream(path), crlfDelay: Infinity })) {
      if (keep(text)) kept.push(text);
    }
  }
  return kept.slice(-tail);
}

/** A deterministic generator (no Math.random: a failure must replay). */
function generator(seed: number): () => number {
  let s = seed;
  return () => {
    s = (s * 1103515245 + 12345) % 2 ** 31;
    return s / 2 ** 31;
  };
}

describe('the last lines of log files, read backwards', () => {
  it('are the lines a forward read keeps, whatever the lengths, endings and filters', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'carapace-tail-'));
    const rnd = generator(7);
    for (let round = 0; round < 40; round++) {
      const paths: string[] = [];
      for (let f = 0; f < 1 + Math.floor(rnd() * 3); f++) {
        const lines: string[] = [];
        const count = Math.floor(rnd() * 40);
        for (let i = 0; i < count; i++) {
          // Lengths around the 64 KiB read size and small ones, some empty, some non-ASCII.
          const len = rnd() < 0.2 ? 65_536 + Math.floor(rnd() * 3) - 1 : Math.floor(rnd() * 300);
          const body = `${round}.${f}.${i} ` + (rnd() < 0.3 ? 'é✓'.repeat(len / 4) : 'x'.repeat(len));
          lines.push(rnd() < 0.1 ? '' : body);
        }
        let text = lines.map((l) => l + (rnd() < 0.2 ? '\r\n' : '\n')).join('');
        if (rnd() < 0.3) text += `${round}.${f} unfinished`;
        const path = join(dir, `${round}-${f}.log`);
        writeFileSync(path, text);
        paths.push(path);
      }
      const keep = rnd() < 0.5 ? () => true : (t: string) => t.length % 3 !== 0;
      for (const tail of [1, 3, 17, 1000]) {
        const fds = paths.map((p) => openSync(p, 'r'));
        try {
          const files = fds.map((fd, i) => ({ fd, size: statSync(paths[i]!).size }));
          expect(await lastLines(files, keep, tail)).toEqual(await forwards(paths, keep, tail));
        } finally {
          for (const fd of fds) closeSync(fd);
        }
      }
    }
  });

  it('reads a file only up to the size it was taken with', async () => {
    const path = join(mkdtempSync(join(tmpdir(), 'carapace-tail-')), 'a.log');
    writeFileSync(path, 'one\ntwo\nthree\n');
    const fd = openSync(path, 'r');
    try {
      expect(await lastLines([{ fd, size: 8 }], () => true, 5)).toEqual(['one', 'two']);
    } finally {
      closeSync(fd);
    }
  });
});
