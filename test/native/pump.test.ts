/**
 * carapace-pump moves a bulk tunnel's bytes between fd 3 (the sandbox side) and fd 4 (the
 * upstream), waiting in poll(2) for whichever side a direction waits on. A call interrupted by a
 * signal (EINTR) must be retried, not left with neither side polled: the direction would stall
 * for good, with bytes waiting on one side. A signal cannot be timed to interrupt one particular
 * non-blocking call, so a preloaded library (fixtures/eintr-once.c) makes the first recv or send
 * fail with EINTR, in a dynamic (sanitizer) build of the pump. test/proxy/tunnel-pump.test.ts
 * covers the pump behind the real proxy.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import type { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildVariant } from './native-build.js';

let server: Server;
let port = 0;
const accepted: Socket[] = [];
let shim = '';
const pumps: ChildProcess[] = [];

beforeAll(async () => {
  server = createServer({ allowHalfOpen: true }, (s) => accepted.push(s));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as { port: number }).port;
  shim = join(mkdtempSync(join(tmpdir(), 'carapace-eintr-')), 'eintr-once.so');
  execFileSync('cc', [
    '-shared',
    '-fPIC',
    '-O2',
    '-o',
    shim,
    join(import.meta.dirname, 'fixtures', 'eintr-once.c'),
  ]);
});
afterAll(() => {
  // A pump that stalled (the failure this file looks for) would otherwise wait in poll forever.
  for (const p of pumps) p.kill('SIGKILL');
  server.close();
});

/** A connected pair on loopback: the end the pump gets, and the end the test keeps. */
async function pair(): Promise<{ given: Socket; kept: Socket }> {
  const count = accepted.length;
  const given = connect(port, '127.0.0.1');
  await new Promise<void>((resolve) => given.once('connect', resolve));
  while (accepted.length === count) await new Promise((r) => setTimeout(r, 5));
  return { given, kept: accepted[count]! };
}

function readUntilEnd(s: Socket): Promise<string> {
  let text = '';
  s.on('data', (d: Buffer) => (text += d.toString()));
  return new Promise((resolve) => s.on('end', () => resolve(text)));
}

async function pumpWithInterrupted(
  call: 'recv' | 'send',
): Promise<{ up: string; down: string; code: number }> {
  const pump = buildVariant('carapace-pump');
  const sandbox = await pair();
  const upstream = await pair();
  const child = spawn(pump, [], {
    stdio: ['ignore', 'ignore', 'pipe', sandbox.given, upstream.given],
    env: { LD_PRELOAD: shim, EINTR_ONCE: call, ASAN_OPTIONS: 'verify_asan_link_order=0' },
  });
  pumps.push(child);
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number>((resolve) => child.on('exit', (code) => resolve(code ?? -1)));
  // The pump holds its own copies now; the proxy lets go of its handles the same way.
  sandbox.given.destroy();
  upstream.given.destroy();
  const up = readUntilEnd(upstream.kept);
  const down = readUntilEnd(sandbox.kept);
  // Each side writes, then half-closes: both directions must arrive and end.
  sandbox.kept.end('from the sandbox');
  upstream.kept.end('from the upstream');
  const result = { up: await up, down: await down, code: await exited };
  expect(stderr).toBe('');
  return result;
}

describe('carapace-pump, when a call is interrupted (EINTR)', () => {
  it('retries a recv from the sandbox side, and the bytes still arrive', async () => {
    expect(await pumpWithInterrupted('recv')).toEqual({
      up: 'from the sandbox',
      down: 'from the upstream',
      code: 0,
    });
  }, 20_000);

  it('retries a send to the upstream, and the bytes still arrive', async () => {
    expect(await pumpWithInterrupted('send')).toEqual({
      up: 'from the sandbox',
      down: 'from the upstream',
      code: 0,
    });
  }, 20_000);
});

/** The pump's anonymous memory (its buffers, once touched), in KiB. */
function rssAnon(pid: number): number {
  const m = /^RssAnon:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m![1]);
}

describe('carapace-pump, started before the proxy moves it into the sandbox cgroups', () => {
  it("reads nothing until the control pipe's 'j', so its buffers are the sandbox's memory", async () => {
    const pump = buildVariant('carapace-pump');
    const sandbox = await pair();
    const upstream = await pair();
    const child = spawn(pump, [], {
      stdio: ['ignore', 'ignore', 'ignore', sandbox.given, upstream.given, 'pipe'],
      env: { ASAN_OPTIONS: 'verify_asan_link_order=0' },
    });
    pumps.push(child);
    await new Promise<void>((resolve) => child.once('spawn', () => resolve()));
    sandbox.given.destroy();
    upstream.given.destroy();
    const control = (child.stdio as unknown as Writable[])[5]!;
    await sleep(200);
    const before = rssAnon(child.pid!);
    // 2 MiB wait on the sandbox side: a pump that reads touches its buffer at once.
    sandbox.kept.write(Buffer.alloc(2 * 1024 * 1024, 1));
    await sleep(400); // what must not happen gets this long
    // Held: not a page of its buffers touched (one recv of what the socket holds is ~128 KiB).
    expect(rssAnon(child.pid!) - before).toBeLessThan(32);
    control.write('j');
    // Joined: it reads (and holds what it read until 'u').
    while (rssAnon(child.pid!) - before < 64) await sleep(20);
    // Released, the bytes arrive upstream.
    let got = 0;
    upstream.kept.on('data', (d: Buffer) => (got += d.length));
    control.end('uc');
    while (got < 2 * 1024 * 1024) await sleep(20);
    child.kill('SIGKILL');
  }, 20_000);
});
