/** Request-level (L7) decisions inside terminated tunnels and on forward requests. */
import type tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  HttpReader,
  type Rig,
  type Upstreams,
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

beforeAll(async () => {
  up = await startUpstreams();
  rig = await startRig({
    up,
    policy: `
version: 1
network_policies:
  api:
    endpoints:
      - host: api.example.test
        port: ${up.httpsPort}
        protocol: rest
        rules:
          - allow: { method: GET, path: "/repos/**" }
          - allow: { method: POST, path: "/upload" }
        deny_rules:
          - { method: GET, path: "/repos/private/**" }
      - { host: api.example.test, port: ${up.httpPort}, protocol: rest, access: read-only }
      - { host: other.example.test, port: ${up.httpsPort}, protocol: rest, enforcement: audit, access: read-only }
      - host: raw.example.test
        port: ${up.httpPort}
        protocol: websocket
        rules:
          - allow: { method: GET, path: "/ws" }
    binaries: [ { path: /usr/bin/curl } ]
`,
  });
});
afterAll(async () => {
  await rig.close();
  await up.close();
});

async function inspected(host = 'api.example.test'): Promise<{ s: tls.TLSSocket; r: HttpReader }> {
  const t = await connectTunnel(rig.socketPath, `${host}:${up.httpsPort}`);
  expect(t.status).toBe(200);
  // The client trusts only the sandbox CA: the proxy terminated TLS.
  const s = await tlsOverTunnel(t, host, rig.authority.caPem);
  return { s, r: new HttpReader(s) };
}

const get = (path: string, host = 'api.example.test', extra = ''): string =>
  `GET ${path} HTTP/1.1\r\nHost: ${host}\r\n${extra}\r\n`;

describe('rules inside a terminated tunnel', () => {
  it('allows GET /repos/** on a kept-alive connection and refuses /admin; each decision is a 4002', async () => {
    const { s, r } = await inspected();
    const ok = await send(r, get('/repos/a/b'));
    expect(ok.status).toBe(200);
    expect(ok.json()).toMatchObject({ url: '/repos/a/b' });
    const ok2 = await send(r, get('/repos/c'));
    expect(ok2.status).toBe(200);
    const allowed = lastEvent(rig.audit, 4002);
    expect(allowed.disposition).toBe('Allowed');
    expect(allowed.http_request).toMatchObject({
      http_method: 'GET',
      url: { hostname: 'api.example.test', path: '/repos/c' },
    });
    const no = await send(r, get('/admin'));
    expect(no.status).toBe(403);
    expect(no.json()).toMatchObject({
      error: 'policy_denied',
      host: 'api.example.test',
      binary: '/usr/bin/curl',
    });
    expect(lastEvent(rig.audit, 4002).disposition).toBe('Blocked');
    expect(await r.closed()).toBe(true);
    s.destroy();
  });

  it('deny_rules win over allow rules', async () => {
    const { s, r } = await inspected();
    const res = await send(r, get('/repos/private/x'));
    expect(res.status).toBe(403);
    expect(res.json<{ reason: string }>().reason).toMatch(/denied/);
    s.destroy();
  });

  it('refuses a Host header that differs from the CONNECT host', async () => {
    const { s, r } = await inspected();
    const res = await send(r, get('/repos/a', 'other.example.test'));
    expect(res.status).toBe(403);
    expect(res.json<{ reason: string }>().reason).toMatch(/Host header/);
    expect(lastEvent(rig.audit, 4002).disposition).toBe('Blocked');
    expect(lastEvent(rig.audit, 2004).finding_info).toMatchObject({ uid: 'host-mismatch' });
    s.destroy();
  });

  it('refuses dot segments above the root and encoded slashes, and forwards the canonical path', async () => {
    for (const path of [
      '/a/../../etc/passwd',
      '/repos%2F..%2Fadmin',
      '/repos/%2e%2e/%2e%2e/admin',
      '/repos\\admin',
    ]) {
      const { s, r } = await inspected();
      const res = await send(r, get(path));
      expect(res.status, path).toBe(403);
      s.destroy();
    }
    const { s, r } = await inspected();
    const res = await send(r, get('/repos/x/../%79/./z'));
    expect(res.status).toBe(200);
    expect(res.json()).toMatchObject({ url: '/repos/y/z' });
    s.destroy();
  });

  it('an encoded slash passes only when the rules allow both readings, and goes upstream as sent', async () => {
    // npm's request for a scoped package: /repos/** allows it read either way.
    {
      const { s, r } = await inspected();
      const res = await send(r, get('/repos/@types%2fnode'));
      expect(res.status).toBe(200);
      expect(res.json()).toMatchObject({ url: '/repos/@types%2Fnode' });
      s.destroy();
    }
    // Kept in its segment it matches /repos/**; a server that decodes it reads a path the deny
    // rule refuses, or one no rule allows.
    for (const [path, why] of [
      ['/repos/private%2Fkeys', /read with its %2F as \/, \/repos\/private\/keys: .*denied/],
      // A dot segment drops a whole segment of the forwarded path: its decoded reading is judged.
      ['/repos/a%2Fb/../private%2Fkeys', /read with its %2F as \/, \/repos\/private\/keys: .*denied/],
      ['/repos/x%2F..%2F..%2Fadmin', /encoded slash \(%2F\) next to an empty, \. or \.\. name/],
      ['/repos/private%2F%2F..%2Fkeys', /encoded slash \(%2F\) next to an empty, \. or \.\. name/],
    ] as const) {
      const { s, r } = await inspected();
      const res = await send(r, get(path));
      expect(res.status, path).toBe(403);
      expect(res.json<{ reason: string }>().reason, path).toMatch(why);
      expect(lastEvent(rig.audit, 4002).disposition).toBe('Blocked');
      s.destroy();
    }
  });

  it('enforcement: audit forwards a refused request and records it as Logged', async () => {
    const { s, r } = await inspected('other.example.test');
    const res = await send(
      r,
      `POST /anything HTTP/1.1\r\nHost: other.example.test\r\nContent-Length: 2\r\n\r\nhi`,
      'POST',
    );
    expect(res.status).toBe(200);
    expect(res.json()).toMatchObject({ method: 'POST', size: 2 });
    const ev = lastEvent(rig.audit, 4002);
    expect(ev.disposition).toBe('Logged');
    expect(ev.unmapped).toMatchObject({ enforcement: 'audit' });
    s.destroy();
  });
});

describe('forward requests', () => {
  it('access: read-only refuses POST and allows GET', async () => {
    const sock = await relayConnect(rig.socketPath);
    const r = new HttpReader(sock);
    const base = `http://api.example.test:${up.httpPort}`;
    expect(
      (await send(r, `GET ${base}/x HTTP/1.1\r\nHost: api.example.test:${up.httpPort}\r\n\r\n`)).status,
    ).toBe(200);
    const res = await send(
      r,
      `POST ${base}/x HTTP/1.1\r\nHost: api.example.test:${up.httpPort}\r\nContent-Length: 1\r\n\r\nx`,
      'POST',
    );
    expect(res.status).toBe(403);
    expect(res.json<{ reason: string }>().reason).toMatch(/POST/);
    sock.destroy();
  });

  it('refuses a Host header that differs from the URL', async () => {
    const sock = await relayConnect(rig.socketPath);
    const res = await send(
      new HttpReader(sock),
      `GET http://api.example.test:${up.httpPort}/x HTTP/1.1\r\nHost: evil.example.test\r\n\r\n`,
    );
    expect(res.status).toBe(403);
  });

  it('refuses https:// in absolute-form (CONNECT is the way)', async () => {
    const sock = await relayConnect(rig.socketPath);
    const res = await send(
      new HttpReader(sock),
      `GET https://api.example.test/x HTTP/1.1\r\nHost: api.example.test\r\n\r\n`,
    );
    expect(res.status).toBe(400);
  });
});

describe('smuggling and malformed heads', () => {
  const cases: [string, string][] = [
    [
      'CL + TE',
      'POST {U}/x HTTP/1.1\r\nHost: {H}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
    ],
    ['obs-fold', 'GET {U}/x HTTP/1.1\r\nHost: {H}\r\nX-A: 1\r\n  folded\r\n\r\n'],
    [
      'duplicate differing CL',
      'POST {U}/x HTTP/1.1\r\nHost: {H}\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx',
    ],
    ['two Host fields', 'GET {U}/x HTTP/1.1\r\nHost: {H}\r\nHost: evil.example.test\r\n\r\n'],
    ['TE gzip', 'POST {U}/x HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n'],
    ['space before colon', 'GET {U}/x HTTP/1.1\r\nHost : {H}\r\n\r\n'],
    ['HTTP/2.0', 'GET {U}/x HTTP/2.0\r\nHost: {H}\r\n\r\n'],
  ];
  for (const [name, template] of cases) {
    it(`refuses ${name} with a 400 and an audit event`, async () => {
      const before = rig.audit.events.length;
      const sock = await relayConnect(rig.socketPath);
      const host = `api.example.test:${up.httpPort}`;
      const text = template.replaceAll('{U}', `http://${host}`).replaceAll('{H}', host);
      const res = await send(new HttpReader(sock), text);
      expect([400, 501, 505]).toContain(res.status);
      expect(res.json()).toMatchObject({ error: 'bad_request' });
      const ev = rig.audit.events.slice(before);
      expect(ev.some((e) => e.class_uid === 4001 && e.disposition === 'Blocked')).toBe(true);
    });
  }

  it('refuses a malformed chunked body inside a tunnel by closing the connection', async () => {
    const { s, r } = await inspected();
    s.write(
      'POST /upload HTTP/1.1\r\nHost: api.example.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n',
    );
    expect(await r.closed()).toBe(true);
  });
});

describe('WebSocket upgrades', () => {
  it('allows an upgrade on a protocol: websocket endpoint and relays frames both ways', async () => {
    const sock = await relayConnect(rig.socketPath);
    const r = new HttpReader(sock);
    sock.write(
      `GET http://raw.example.test:${up.httpPort}/ws HTTP/1.1\r\nHost: raw.example.test:${up.httpPort}\r\n` +
        'Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
    );
    const res = await r.response();
    expect(res.status).toBe(101);
    sock.write('ping-frame');
    const echo = await r.reader.read();
    expect(echo?.toString()).toBe('ping-frame');
    expect(rig.sb.openTunnels).toBeGreaterThan(0);
    sock.destroy();
  });

  it('refuses an upgrade on a rest endpoint', async () => {
    const { s, r } = await inspected();
    const res = await send(
      r,
      get('/repos/ws', 'api.example.test', 'Connection: Upgrade\r\nUpgrade: websocket\r\n'),
    );
    expect(res.status).toBe(403);
    expect(res.json<{ reason: string }>().reason).toMatch(/upgrade/);
    s.destroy();
  });
});

describe('audit hygiene', () => {
  it('never records a query string', async () => {
    const { s, r } = await inspected();
    const res = await send(r, get('/repos/q?token=sekrit-query-value&x=1'));
    expect(res.status).toBe(200);
    expect(res.json()).toMatchObject({ url: '/repos/q?token=sekrit-query-value&x=1' });
    s.destroy();
    expect(JSON.stringify(rig.audit.events)).not.toContain('sekrit-query-value');
    expect(eventsOf(rig.audit, 4002).length).toBeGreaterThan(0);
  });
});

describe('terminated tunnels and SNI', () => {
  it('closes a terminated tunnel whose ClientHello names another host, with a finding', async () => {
    const { default: tlsMod } = await import('node:tls');
    const before = eventsOf(rig.audit, 2004).length;
    const t = await connectTunnel(rig.socketPath, `api.example.test:${up.httpsPort}`);
    const rest = t.reader.reader.detach();
    if (rest.length) t.socket.unshift(rest);
    // A client that ignores certificate errors, to get past the handshake with the wrong name.
    const s = tlsMod.connect({
      socket: t.socket,
      servername: 'other.example.test',
      rejectUnauthorized: false,
    });
    s.on('error', () => undefined);
    await new Promise<void>((r) => s.once('close', () => r()));
    const f = eventsOf(rig.audit, 2004).slice(before);
    expect(f.map((e) => (e.finding_info as { uid: string }).uid)).toContain('sni-mismatch');
  });
});

describe('pipelining', () => {
  it('answers pipelined requests in order, each judged on its own', async () => {
    const { s, r } = await inspected();
    s.write(get('/repos/one') + get('/repos/two') + get('/admin'));
    expect((await r.response()).json()).toMatchObject({ url: '/repos/one' });
    expect((await r.response()).json()).toMatchObject({ url: '/repos/two' });
    expect((await r.response()).status).toBe(403);
    s.destroy();
  });
});
