/**
 * Bulk raw tunnels are handed to native/carapace-pump after a few MiB: the bytes must arrive
 * complete and in order both ways, half-close must travel through, and a reload must still close
 * a tunnel the pump carries.
 */
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compile, relayConnect, startRig, type Rig } from './harness.js';

const PUMP = resolve(import.meta.dirname, '..', '..', 'native', 'carapace-pump');
const MiB = 1024 * 1024;

let echo: net.Server;
let echoPort: number;
let rig: Rig;
let marker: string;

const policy = (port: number) => `version: 1
network_policies:
  raw:
    name: raw
    endpoints:
      - { host: raw.example.test, port: ${port} }
`;

beforeAll(async () => {
  // A tunnel closed by a reload resets the echo's side: that is expected, not an error to raise.
  echo = net.createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => {});
    s.pipe(s);
  });
  await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
  echoPort = (echo.address() as net.AddressInfo).port;
  // A wrapper that records each start, so the test knows the pump (not Node) carried the bytes.
  const dir = mkdtempSync(join(tmpdir(), 'carapace-pump-'));
  marker = join(dir, 'starts');
  const wrapper = join(dir, 'pump');
  writeFileSync(wrapper, `#!/bin/sh\necho started >> ${marker}\nexec ${PUMP}\n`);
  chmodSync(wrapper, 0o755);
  rig = await startRig({
    policy: policy(echoPort),
    allowLocal: [`127.0.0.1:${echoPort}`],
    tunnelPump: wrapper,
  });
});
afterAll(async () => {
  await rig.close();
  echo.close();
});

async function tunnel(): Promise<net.Socket> {
  const s = await relayConnect(rig.socketPath);
  s.write(`CONNECT raw.example.test:${echoPort} HTTP/1.1\r\nHost: raw.example.test:${echoPort}\r\n\r\n`);
  const head = await new Promise<string>((r) => s.once('data', (d: Buffer) => r(d.toString('latin1'))));
  expect(head).toMatch(/^HTTP\/1\.1 200/);
  return s;
}

const starts = () => (existsSync(marker) ? readFileSync(marker, 'utf8').trim().split('\n').length : 0);

describe('bulk raw tunnels move to carapace-pump', () => {
  it('carries 64 MiB through the echo intact, in order, with half-close; the bytes are counted', async () => {
    const before = starts();
    const counted = rig.sb.counters;
    const s = await tunnel();
    // Starts with 0x00: neither a TLS record nor an HTTP method, so the tunnel stays raw.
    const payload = Buffer.concat([Buffer.from([0]), randomBytes(64 * MiB - 1)]);
    const got = createHash('sha256');
    let received = 0;
    const done = new Promise<void>((r) => s.on('end', r));
    s.on('data', (d: Buffer) => {
      got.update(d);
      received += d.length;
    });
    for (let off = 0; off < payload.length; off += MiB) {
      if (!s.write(payload.subarray(off, off + MiB))) await new Promise((r) => s.once('drain', r));
    }
    s.end();
    await done;
    expect(received).toBe(payload.length);
    expect(got.digest('hex')).toBe(createHash('sha256').update(payload).digest('hex'));
    expect(starts()).toBe(before + 1);
    s.destroy();
    // The sandbox's byte counters hold what the pump moved too (it reports them; the last report
    // comes as it exits, after the tunnel's end reached this side).
    const moved = () => ({
      from: rig.sb.counters.bytesFromSandbox - counted.bytesFromSandbox,
      to: rig.sb.counters.bytesToSandbox - counted.bytesToSandbox,
    });
    while (moved().from < payload.length || moved().to < payload.length)
      await new Promise((r) => setTimeout(r, 20));
    // Besides the payload: the relay header and the CONNECT exchange.
    expect(moved().from).toBeLessThan(payload.length + 1024);
    expect(moved().to).toBeLessThan(payload.length + 1024);
  });

  it('a small tunnel stays in the proxy', async () => {
    const before = starts();
    const s = await tunnel();
    const back = new Promise<Buffer>((r) => s.once('data', r));
    s.write(Buffer.from([0, 1, 2, 3]));
    expect([...(await back)]).toEqual([0, 1, 2, 3]);
    s.destroy();
    expect(starts()).toBe(before);
  });

  it('a reload closes a tunnel the pump carries', async () => {
    const before = starts();
    const s = await tunnel();
    const closed = new Promise<void>((r) => s.once('close', () => r()));
    s.on('data', () => {});
    s.on('error', () => {});
    const chunk = Buffer.alloc(MiB, 1);
    chunk[0] = 0;
    for (let i = 0; i < 8; i++) s.write(chunk);
    while (starts() === before) await new Promise((r) => setTimeout(r, 20));
    expect(rig.sb.setGeneration(compile(policy(1)))).toBe(1);
    await closed;
    rig.sb.setGeneration(compile(policy(echoPort)));
  });
});
