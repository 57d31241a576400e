/**
 * What the proxy may spend on one sandbox (src/proxy/budget/sandbox-budget.ts): the defaults derived from
 * its limits, byte accounts, the work bucket's order and its debts, and the read gates that stop a
 * real socket at its handle. Timers are waited for by the state they change, never by a fixed sleep.
 */
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { readGate } from '../../src/proxy/budget/read-gate.js';
import { COST, SandboxBudget, budgetsFor } from '../../src/proxy/budget/sandbox-budget.js';

const MiB = 1024 * 1024;

/** Bytes waiting in the receive queue of this process's TCP socket on local port `port`. */
function receiveQueue(port: number): number {
  const hex = port.toString(16).toUpperCase().padStart(4, '0');
  for (const line of readFileSync('/proc/self/net/tcp', 'latin1').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f[1]?.endsWith(`:${hex}`) && f[3] === '01') return parseInt((f[4] ?? '0:0').split(':')[1] ?? '0', 16);
  }
  return 0;
}

async function until(check: () => boolean): Promise<void> {
  while (!check()) await new Promise((r) => setTimeout(r, 5));
}

describe('budgetsFor', () => {
  it('derives from the limits: 128 MiB and 50m give 16 MiB, 512 connections, 50 ms/s', () => {
    expect(budgetsFor({ memoryBytes: 128 * MiB, cpuMillis: 50 })).toEqual({
      bufferBytes: 16 * MiB,
      maxConnections: 512,
      workMicrosPerSecond: 50_000,
      workBurstMicros: 100_000,
    });
  });
  it('clamps small and large sandboxes; without limits, defaults and no limit on work', () => {
    expect(budgetsFor({ memoryBytes: 8 * MiB, cpuMillis: 1 })).toMatchObject({
      bufferBytes: 2 * MiB,
      maxConnections: 64,
      workMicrosPerSecond: 10_000,
    });
    expect(budgetsFor({ memoryBytes: 64 * 1024 * MiB, cpuMillis: 4000 })).toMatchObject({
      bufferBytes: 64 * MiB,
      maxConnections: 1024,
      workMicrosPerSecond: 4_000_000,
      workBurstMicros: 4_000_000,
    });
    expect(budgetsFor()).toEqual({
      bufferBytes: 64 * MiB,
      maxConnections: 1024,
      workMicrosPerSecond: Infinity,
      workBurstMicros: Infinity,
    });
  });
  it('takes explicit values field by field; undefined ones do not count', () => {
    expect(budgetsFor({ cpuMillis: 50 }, { bufferBytes: MiB, maxConnections: undefined })).toMatchObject({
      bufferBytes: MiB,
      maxConnections: 1024,
      workMicrosPerSecond: 50_000,
    });
  });
});

describe('SandboxBudget', () => {
  const budget = (over: Partial<ReturnType<typeof budgetsFor>> = {}): SandboxBudget =>
    new SandboxBudget(
      budgetsFor({}, { bufferBytes: 1000, workMicrosPerSecond: 1e9, workBurstMicros: 1e9, ...over }),
    );

  it('an account releases what it still holds when it closes, and ignores later callbacks', () => {
    const b = budget();
    const a = b.account();
    a.hold(600);
    a.hold(300);
    a.release(200);
    expect(b.stats.heldBytes).toBe(700);
    a.close();
    expect(b.stats.heldBytes).toBe(0);
    a.release(300);
    a.hold(50);
    expect(b.stats.heldBytes).toBe(0);
    expect(b.stats.peakHeldBytes).toBe(900);
  });

  it('over the buffer budget it is throttled until it falls to half', () => {
    const b = budget();
    const a = b.account();
    a.hold(1001);
    expect(b.stats).toMatchObject({ throttled: true, throttles: 1 });
    a.release(400);
    expect(b.stats.throttled).toBe(true);
    a.release(101);
    expect(b.stats.throttled).toBe(false);
  });

  it('serves work in order of asking, as tokens come', async () => {
    // One request's worth of tokens every 50 ms: the three after the burst must wait.
    const b = budget({ workMicrosPerSecond: 20 * COST.request, workBurstMicros: 2 * COST.request });
    expect(b.spend(2 * COST.request)).toBeUndefined();
    const order: number[] = [];
    const waits = [1, 2, 3].map((i) => b.spend(COST.request)?.then(() => order.push(i)));
    expect(b.stats.waiting).toBe(3);
    await Promise.all(waits);
    expect(order).toEqual([1, 2, 3]);
    expect(b.stats.waits).toBe(3);
  });

  it('relayed bytes may run into debt: reads stop until it is paid', async () => {
    const b = budget({ workMicrosPerSecond: 200_000, workBurstMicros: 1000 });
    const a = b.account();
    a.hold(1000 * COST.bytesPerMicro + COST.bytesPerMicro * 500);
    a.release(1000 * COST.bytesPerMicro + COST.bytesPerMicro * 500);
    expect(b.stats.throttled).toBe(true);
    await until(() => !b.stats.throttled);
    expect(b.stats.workTokens).toBeGreaterThanOrEqual(0);
    b.close();
  });
});

describe('read gates on a real socket', () => {
  const servers: net.Server[] = [];
  afterEach(() => {
    for (const s of servers.splice(0)) s.close();
  });

  it('a closed gate reads nothing however much arrives; reopening delivers it all, in order', async () => {
    let peer: net.Socket | null = null;
    const server = net.createServer((s) => (peer = s));
    servers.push(server);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const c = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
    await new Promise((r) => c.once('connect', r));
    await until(() => peer !== null);
    const got: Buffer[] = [];
    c.on('data', (d: Buffer) => got.push(d));
    const gate = readGate(c);
    gate.close();
    const sent = Buffer.alloc(256 * 1024, 7);
    peer!.write(sent);
    // The kernel holds bytes for us to read; a poll phase that follows would read them if the
    // handle were reading. It is not: nothing was read.
    await until(() => receiveQueue(c.localPort as number) > 0);
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setImmediate(r));
    expect(c.bytesRead).toBe(0);
    gate.open();
    await until(() => c.bytesRead === sent.length);
    expect(Buffer.concat(got).equals(sent)).toBe(true);
    c.destroy();
    peer!.destroy();
  });

  it('a budget closes the gates of every socket it holds, and opens them again', async () => {
    const b = new SandboxBudget(budgetsFor({}, { bufferBytes: 10 }));
    const server = net.createServer(() => undefined);
    servers.push(server);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const c = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
    await new Promise((r) => c.once('connect', r));
    const ungate = b.gate(c);
    const handle = (c as unknown as { _handle: { reading: boolean } })._handle;
    c.resume();
    await until(() => handle.reading);
    const a = b.account();
    a.hold(11);
    expect(handle.reading).toBe(false);
    a.release(11);
    expect(handle.reading).toBe(true);
    ungate();
    c.destroy();
  });
});
