/**
 * The host-wide lock file (src/sandbox/identity/host-lock.ts) within one process: takers queue for it in
 * turn and get it as soon as it is released, instead of polling their own process's lock file (a
 * gateway that stops one sandbox while starting another, or a start right after a run's clean-up).
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { HostLock } from '../../src/sandbox/identity/host-lock.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function lockFile(): string {
  const dir = mkdtempSync(join(tmpdir(), 'carapace-lock-'));
  dirs.push(dir);
  return join(dir, 'lock');
}

const busy = () => new Error('busy');
/** Resolves after the event loop's current turn: timers due now have run by then, sleeps not. */
const nextTurn = () => new Promise<string>((resolve) => setImmediate(() => resolve('later')));

describe('the host lock within one process', () => {
  it('hands the lock to the next taker in the same turn as its release, in the order they asked', async () => {
    const path = lockFile();
    const a = await HostLock.take(path, 5_000, busy);
    expect(readFileSync(path, 'utf8')).toMatch(new RegExp(`^${process.pid} \\d+\\n$`));
    const order: string[] = [];
    const b = HostLock.take(path, 5_000, busy).then((l) => (order.push('b'), l));
    const c = HostLock.take(path, 5_000, busy).then((l) => (order.push('c'), l));
    // Long enough for any poll to have found the file taken and gone to sleep.
    await new Promise((r) => setTimeout(r, 20));
    expect(order).toEqual([]);
    a.release();
    expect(await Promise.race([b.then(() => 'taken'), nextTurn()])).toBe('taken');
    expect(order).toEqual(['b']);
    (await b).release();
    (await c).release();
    expect(order).toEqual(['b', 'c']);
    expect(existsSync(path)).toBe(false);
  });

  it('gives up a queued taker at its patience, and the queue goes on without it', async () => {
    const path = lockFile();
    const a = await HostLock.take(path, 5_000, busy);
    await expect(HostLock.take(path, 30, busy)).rejects.toThrow('busy');
    const c = HostLock.take(path, 5_000, busy);
    a.release();
    a.release(); // a second release changes nothing: c's lock stays
    const held = await c;
    expect(existsSync(path)).toBe(true);
    held.release();
    expect(existsSync(path)).toBe(false);
    const d = await HostLock.take(path, 5_000, busy);
    d.release();
  });
});
