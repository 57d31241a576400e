/** Hot reload (atomic generation swap) and large streaming bodies. */
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  HttpReader,
  type Rig,
  type Upstreams,
  compile,
  connectTunnel,
  eventsOf,
  lastEvent,
  relayConnect,
  send,
  startRig,
  startUpstreams,
  tlsOverTunnel,
} from './harness.js';

let up: Upstreams;
let rig: Rig;

const full = (u: Upstreams): string => `
version: 1
network_policies:
  api:
    endpoints:
      - { host: api.example.test, port: ${u.httpsPort}, protocol: rest, access: full }
      - { host: api.example.test, port: ${u.httpPort}, protocol: rest, access: full }
  raw:
    endpoints:
      - { host: raw.example.test, port: ${u.httpsPort} }
`;
const without = (u: Upstreams): string => `
version: 1
network_policies:
  other:
    endpoints:
      - { host: other.example.test, port: ${u.httpsPort}, protocol: rest, access: full }
`;

beforeAll(async () => {
  up = await startUpstreams();
  rig = await startRig({ up, policy: full(up) });
});
afterAll(async () => {
  await rig.close();
  await up.close();
});

describe('hot reload', () => {
  it('judges the next request on a kept-alive L7 connection by the new generation', async () => {
    rig.sb.setGeneration(compile(full(up)));
    const t = await connectTunnel(rig.socketPath, `api.example.test:${up.httpsPort}`);
    const r = new HttpReader(await tlsOverTunnel(t, 'api.example.test', rig.authority.caPem));
    expect((await send(r, 'GET /one HTTP/1.1\r\nHost: api.example.test\r\n\r\n')).status).toBe(200);
    const gen = rig.sb.generation;
    rig.sb.setGeneration(compile(without(up)));
    expect(rig.sb.generation).toBe(gen + 1);
    const res = await send(r, 'GET /two HTTP/1.1\r\nHost: api.example.test\r\n\r\n');
    expect(res.status).toBe(403);
    expect(res.json<{ reason: string }>().reason).toMatch(/no longer allowed/);
    expect(lastEvent(rig.audit, 4002).unmapped).toMatchObject({ generation: gen + 1 });
    expect(lastEvent(rig.audit, 5019).unmapped).toMatchObject({ generation: gen + 1 });
    // New connections use it at once.
    const t2 = await connectTunnel(rig.socketPath, `api.example.test:${up.httpsPort}`);
    expect(t2.status).toBe(403);
    rig.sb.setGeneration(compile(full(up)));
  });

  it('closes an open raw tunnel the new generation no longer allows (4001 Close)', async () => {
    const t = await connectTunnel(rig.socketPath, `raw.example.test:${up.httpsPort}`);
    const s = await tlsOverTunnel(t, 'raw.example.test', up.ca.caPem);
    const r = new HttpReader(s);
    expect((await send(r, 'GET /a HTTP/1.1\r\nHost: raw.example.test\r\n\r\n')).status).toBe(200);
    expect(rig.sb.openTunnels).toBe(1);
    const closedEvents = eventsOf(rig.audit, 4001).filter((e) => e.activity_id === 2).length;
    const closed = rig.sb.setGeneration(compile(without(up)));
    expect(closed).toBe(1);
    expect(await r.closed()).toBe(true);
    expect(rig.sb.openTunnels).toBe(0);
    const close = eventsOf(rig.audit, 4001).filter((e) => e.activity_id === 2);
    expect(close.length).toBe(closedEvents + 1);
    expect(close[close.length - 1]?.dst_endpoint).toMatchObject({ hostname: 'raw.example.test' });
    expect(close[close.length - 1]?.message).toMatch(/policy reload/);
    rig.sb.setGeneration(compile(full(up)));
  });

  it('closes a tunnel allowed before a reload that came while its first bytes were awaited', async () => {
    const t = await connectTunnel(rig.socketPath, `raw.example.test:${up.httpsPort}`);
    expect(t.status).toBe(200);
    // Allowed, connected upstream, and waiting for the ClientHello: not yet a tracked tunnel, so the
    // reload itself closes nothing.
    expect(rig.sb.setGeneration(compile(without(up)))).toBe(0);
    const handshake = tlsOverTunnel(t, 'raw.example.test', up.ca.caPem);
    await expect(handshake).rejects.toThrow();
    const close = eventsOf(rig.audit, 4001).filter((e) => e.activity_id === 2);
    expect(close[close.length - 1]?.message).toMatch(/policy reload/);
    expect(rig.sb.openTunnels).toBe(0);
    rig.sb.setGeneration(compile(full(up)));
  });

  it('keeps a raw tunnel that the new generation still allows', async () => {
    const t = await connectTunnel(rig.socketPath, `raw.example.test:${up.httpsPort}`);
    const r = new HttpReader(await tlsOverTunnel(t, 'raw.example.test', up.ca.caPem));
    expect(rig.sb.setGeneration(compile(full(up)))).toBe(0);
    expect((await send(r, 'GET /still HTTP/1.1\r\nHost: raw.example.test\r\n\r\n')).status).toBe(200);
    r.socket.destroy();
  });
});

describe('streaming bodies', () => {
  const MiB = 1024 * 1024;

  it('streams a large chunked upload through a terminated tunnel', async () => {
    const t = await connectTunnel(rig.socketPath, `api.example.test:${up.httpsPort}`);
    const s = await tlsOverTunnel(t, 'api.example.test', rig.authority.caPem);
    const r = new HttpReader(s);
    s.write('POST /upload HTTP/1.1\r\nHost: api.example.test\r\nTransfer-Encoding: chunked\r\n\r\n');
    const hash = createHash('sha256');
    const block = Buffer.alloc(256 * 1024);
    let total = 0;
    for (let i = 0; i < 128; i++) {
      block.fill(i & 0xff);
      hash.update(block);
      total += block.length;
      s.write(`${block.length.toString(16)}\r\n`);
      s.write(block);
      if (!s.write('\r\n')) await new Promise((d) => s.once('drain', d));
    }
    s.write('0\r\n\r\n');
    const res = await r.response('POST');
    expect(res.status).toBe(200);
    expect(res.json()).toMatchObject({ size: total, sha256: hash.digest('hex') });
    expect(total).toBe(32 * MiB);
    s.destroy();
  });

  it('streams a large Content-Length upload on a forward request', async () => {
    const s = await relayConnect(rig.socketPath);
    const r = new HttpReader(s);
    const size = 24 * MiB;
    s.write(
      `POST http://api.example.test:${up.httpPort}/up HTTP/1.1\r\nHost: api.example.test:${up.httpPort}\r\nContent-Length: ${size}\r\n\r\n`,
    );
    const block = Buffer.alloc(MiB, 7);
    for (let i = 0; i < 24; i++) if (!s.write(block)) await new Promise((d) => s.once('drain', d));
    const res = await r.response('POST');
    expect(res.json()).toMatchObject({
      size,
      sha256: createHash('sha256').update(Buffer.alloc(size, 7)).digest('hex'),
    });
    s.destroy();
  });

  it('streams a large download back through a terminated tunnel and a forward request', async () => {
    const size = 48 * MiB;
    const t = await connectTunnel(rig.socketPath, `api.example.test:${up.httpsPort}`);
    const r = new HttpReader(await tlsOverTunnel(t, 'api.example.test', rig.authority.caPem));
    const res = await send(r, `GET /bytes/${size} HTTP/1.1\r\nHost: api.example.test\r\n\r\n`);
    expect(res.body.length).toBe(size);
    // Then the same connection keeps working.
    expect((await send(r, 'GET /after HTTP/1.1\r\nHost: api.example.test\r\n\r\n')).status).toBe(200);
    r.socket.destroy();
    const s = await relayConnect(rig.socketPath);
    const res2 = await send(
      new HttpReader(s),
      `GET http://api.example.test:${up.httpPort}/bytes/${size} HTTP/1.1\r\nHost: api.example.test:${up.httpPort}\r\n\r\n`,
    );
    expect(res2.body.length).toBe(size);
    s.destroy();
  });
});

describe('detach', () => {
  it('closes the sandbox connections and removes its socket; other sandboxes keep working', async () => {
    const { existsSync } = await import('node:fs');
    const other = await startRig({ up, policy: full(up) });
    const t = await connectTunnel(other.socketPath, `raw.example.test:${up.httpsPort}`);
    const r = new HttpReader(await tlsOverTunnel(t, 'raw.example.test', up.ca.caPem));
    await other.sb.detach();
    expect(await r.closed()).toBe(true);
    expect(existsSync(other.socketPath)).toBe(false);
    expect(other.proxy.sandboxes).toEqual([]);
    const s = await relayConnect(rig.socketPath);
    const res = await send(
      new HttpReader(s),
      `GET http://api.example.test:${up.httpPort}/x HTTP/1.1\r\nHost: api.example.test:${up.httpPort}\r\n\r\n`,
    );
    expect(res.status).toBe(200);
    s.destroy();
    await other.close();
  });
});
