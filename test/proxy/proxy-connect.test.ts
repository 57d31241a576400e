/** Connection-level decisions through the sandbox socket: host, port, binary, SNI, SSRF, relay header. */
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  HttpReader,
  type Rig,
  type Upstreams,
  connectTunnel,
  eventsOf,
  fixedCaller,
  lastEvent,
  relayConnect,
  send,
  startRig,
  startUpstreams,
  tlsOverTunnel,
} from './harness.js';

let up: Upstreams;
let rig: Rig;

const policy = (u: Upstreams): string => `
version: 1
network_policies:
  api:
    endpoints:
      - { host: api.example.test, port: ${u.httpsPort}, protocol: rest, access: full }
      - { host: api.example.test, port: ${u.httpPort}, protocol: rest, access: full }
      - { host: raw.example.test, port: ${u.httpsPort} }
      - { host: 127.0.0.1, port: ${u.httpsPort} }
    binaries: [ { path: /usr/bin/curl } ]
`;

beforeAll(async () => {
  up = await startUpstreams();
  rig = await startRig({ up, policy: policy(up) });
});
afterAll(async () => {
  await rig.close();
  await up.close();
});

describe('connection decisions', () => {
  it('allows a listed host through CONNECT and records 4001 allowed with caller and policy', async () => {
    const t = await connectTunnel(rig.socketPath, `api.example.test:${up.httpsPort}`);
    expect(t.status).toBe(200);
    const ev = lastEvent(rig.audit, 4001);
    expect(ev.disposition).toBe('Allowed');
    expect(ev.unmapped).toMatchObject({ sandbox: 'sb1', policy: 'api' });
    expect(ev.actor).toEqual({ process: { pid: 4242, file: { path: '/usr/bin/curl' } } });
    expect(ev.dst_endpoint).toMatchObject({
      hostname: 'api.example.test',
      port: up.httpsPort,
      ip: '127.0.0.1',
    });
    t.socket.destroy();
  });

  it('allows a listed host through a forward request', async () => {
    const s = await relayConnect(rig.socketPath);
    const res = await send(
      new HttpReader(s),
      `GET http://api.example.test:${up.httpPort}/x HTTP/1.1\r\nHost: api.example.test:${up.httpPort}\r\n\r\n`,
    );
    expect(res.status).toBe(200);
    expect(res.json()).toMatchObject({ method: 'GET', url: '/x' });
    s.destroy();
  });

  it('refuses a host outside the policy with the 403 JSON body and a 4001 refusal', async () => {
    const t = await connectTunnel(rig.socketPath, 'evil.example.test:443');
    expect(t.status).toBe(403);
    expect(t.response.head).toMatch(/Content-Type: application\/json/);
    expect(t.response.head).toMatch(/Connection: close/);
    const body = t.response.json();
    expect(body).toMatchObject({
      error: 'policy_denied',
      host: 'evil.example.test',
      port: 443,
      binary: '/usr/bin/curl',
    });
    // The hint names a command that exists, with this request's host, port and program.
    expect(body.hint).toMatch(
      /^carapace policy explain POLICY_FILE --host evil\.example\.test --port 443 --binary \/usr\/bin\/curl /,
    );
    expect(typeof body.reason).toBe('string');
    const ev = lastEvent(rig.audit, 4001);
    expect(ev.disposition).toBe('Blocked');
    expect(ev.dst_endpoint).toMatchObject({ hostname: 'evil.example.test', port: 443 });
    expect(await t.reader.closed()).toBe(true);
  });

  it('refuses a forward request to a host outside the policy', async () => {
    const s = await relayConnect(rig.socketPath);
    const res = await send(
      new HttpReader(s),
      'GET http://evil.example.test/ HTTP/1.1\r\nHost: evil.example.test\r\n\r\n',
    );
    expect(res.status).toBe(403);
    expect(res.json()).toMatchObject({ error: 'policy_denied', host: 'evil.example.test', port: 80 });
    expect(lastEvent(rig.audit, 4001).disposition).toBe('Blocked');
  });

  it('refuses the wrong port', async () => {
    const t = await connectTunnel(rig.socketPath, 'api.example.test:8443');
    expect(t.status).toBe(403);
    expect(t.response.json()).toMatchObject({ port: 8443 });
  });

  it('refuses a binary the policy does not list', async () => {
    const other = await startRig({ up, policy: policy(up), caller: fixedCaller('/usr/bin/wget', []) });
    try {
      const t = await connectTunnel(other.socketPath, `api.example.test:${up.httpsPort}`);
      expect(t.status).toBe(403);
      expect(t.response.json()).toMatchObject({ binary: '/usr/bin/wget' });
      expect(lastEvent(other.audit, 4001).actor).toMatchObject({
        process: { file: { path: '/usr/bin/wget' } },
      });
    } finally {
      await other.close();
    }
  });

  it('counts ancestors only for a binary marked descendants: true', async () => {
    const caller = fixedCaller('/usr/bin/ssh', ['/usr/bin/curl', '/usr/bin/bash']);
    const plain = await startRig({ up, policy: policy(up), caller });
    const marked = await startRig({
      up,
      policy: policy(up).replace('{ path: /usr/bin/curl }', '{ path: /usr/bin/curl, descendants: true }'),
      caller,
    });
    try {
      const refused = await connectTunnel(plain.socketPath, `api.example.test:${up.httpsPort}`);
      expect(refused.status).toBe(403);
      expect(refused.response.json<{ reason: string }>().reason).toContain(
        'it runs under "/usr/bin/curl", but the programs a binary starts count only with descendants: true',
      );
      const t = await connectTunnel(marked.socketPath, `api.example.test:${up.httpsPort}`);
      expect(t.status).toBe(200);
      t.socket.destroy();
    } finally {
      await plain.close();
      await marked.close();
    }
  });

  it('refuses non-canonical IPv4 literals (decimal, octal, hex, short) before policy', async () => {
    for (const host of ['2130706433', '0177.0.0.1', '0x7f.0.0.1', '127.1']) {
      const t = await connectTunnel(rig.socketPath, `${host}:${up.httpsPort}`);
      expect(t.status, host).toBe(400);
      expect(t.response.json<{ reason: string }>().reason).toMatch(/non-canonical IPv4/);
    }
  });
});

describe('raw tunnels and SNI', () => {
  it('relays TLS end to end when the SNI equals the CONNECT host (the upstream certificate is seen)', async () => {
    const t = await connectTunnel(rig.socketPath, `raw.example.test:${up.httpsPort}`);
    expect(t.status).toBe(200);
    // Trust only the upstream CA: the proxy did not terminate this tunnel.
    const s = await tlsOverTunnel(t, 'raw.example.test', up.ca.caPem);
    const res = await send(new HttpReader(s), 'GET /raw HTTP/1.1\r\nHost: raw.example.test\r\n\r\n');
    expect(res.status).toBe(200);
    expect(rig.sb.openTunnels).toBe(1);
    s.destroy();
  });

  it('closes the tunnel and records a finding when the SNI differs from the CONNECT host', async () => {
    const before = eventsOf(rig.audit, 2004).length;
    const t = await connectTunnel(rig.socketPath, `raw.example.test:${up.httpsPort}`);
    const err = await tlsOverTunnel(t, 'api.example.test', up.ca.caPem).then(
      () => null,
      (e: Error) => e,
    );
    expect(err).not.toBeNull();
    const findings = eventsOf(rig.audit, 2004).slice(before);
    expect(findings).toHaveLength(1);
    expect(findings[0]?.finding_info).toMatchObject({ uid: 'sni-mismatch' });
    expect(findings[0]?.dst_endpoint).toMatchObject({ hostname: 'raw.example.test' });
    expect(lastEvent(rig.audit, 4001).activity_id).toBe(2); // Close
  });

  it('refuses a ClientHello without SNI for a DNS host, accepts it for an IP literal', async () => {
    const t = await connectTunnel(rig.socketPath, `raw.example.test:${up.httpsPort}`);
    const rest = t.reader.reader.detach();
    if (rest.length) t.socket.unshift(rest);
    const s = tls.connect({ socket: t.socket, ca: up.ca.caPem, checkServerIdentity: () => undefined });
    const failed = await new Promise<boolean>((r) => {
      s.once('secureConnect', () => r(false));
      s.once('error', () => r(true));
      s.once('close', () => r(true));
    });
    expect(failed).toBe(true);
    expect(lastEvent(rig.audit, 2004).finding_info).toMatchObject({ uid: 'sni-missing' });

    // An IP literal: clients send no SNI; the tunnel is allowed.
    const t2 = await connectTunnel(rig.socketPath, `127.0.0.1:${up.httpsPort}`);
    expect(t2.status).toBe(200);
    const rest2 = t2.reader.reader.detach();
    if (rest2.length) t2.socket.unshift(rest2);
    const before = eventsOf(rig.audit, 2004).length;
    // The upstream has no certificate for a client without SNI and answers with a TLS alert: the
    // alert reaching the client proves the proxy relayed the hello (a refusal only closes).
    const s2 = tls.connect({ socket: t2.socket, rejectUnauthorized: false });
    const err = await new Promise<Error>((resolve) => s2.once('error', resolve));
    expect(err.message).toMatch(/alert handshake failure/);
    expect(eventsOf(rig.audit, 2004).length).toBe(before);
    s2.destroy();
  });
});

describe('SSRF guard', () => {
  const pol = (u: Upstreams): string => `
version: 1
network_policies:
  api:
    endpoints:
      - { host: api.example.test, port: ${u.httpsPort} }
      - { host: meta.example.test, port: 80 }
    binaries: [ { path: /usr/bin/curl } ]
`;

  it('refuses a name that resolves to loopback unless the operator allows that ip:port', async () => {
    const strict = await startRig({ up, policy: pol(up), allowLocal: [] });
    try {
      const t = await connectTunnel(strict.socketPath, `api.example.test:${up.httpsPort}`);
      expect(t.status).toBe(403);
      const body = t.response.json<{ reason: string; hint: string }>();
      expect(body.reason).toMatch(/127\.0\.0\.1 is loopback/);
      // A loopback refusal says how a host service is reached: the policy's host-local name, or the
      // operator's --allow-local.
      expect(body.hint).toContain(`host.openshell.internal:${up.httpsPort}`);
      expect(body.hint).toContain(`--allow-local 127.0.0.1:${up.httpsPort} on carapace run`);
      expect(lastEvent(strict.audit, 4001).dst_endpoint).toMatchObject({ ip: '127.0.0.1' });
    } finally {
      await strict.close();
    }
    const t = await connectTunnel(rig.socketPath, `api.example.test:${up.httpsPort}`);
    expect(t.status).toBe(200);
    t.socket.destroy();
  });

  it('refuses the metadata address 169.254.169.254 without connecting', async () => {
    const r = await startRig({
      up,
      policy: pol(up),
      hosts: { 'meta.example.test': '169.254.169.254', 'api.example.test': '127.0.0.1' },
    });
    try {
      const s = await relayConnect(r.socketPath);
      const res = await send(
        new HttpReader(s),
        'GET http://meta.example.test/latest/meta-data HTTP/1.1\r\nHost: meta.example.test\r\n\r\n',
      );
      expect(res.status).toBe(403);
      expect(res.json<{ reason: string }>().reason).toMatch(/169\.254\.169\.254 is link-local/);
    } finally {
      await r.close();
    }
  });
});

describe('relay header', () => {
  it('closes a connection without a valid PROXY line and records a finding', async () => {
    const before = eventsOf(rig.audit, 2004).length;
    const s = await import('node:net').then((net) => net.connect(rig.socketPath));
    s.write('GET http://api.example.test/ HTTP/1.1\r\nHost: api.example.test\r\n\r\n');
    const closed = await new HttpReader(s).closed();
    expect(closed).toBe(true);
    const f = eventsOf(rig.audit, 2004).slice(before);
    expect(f[0]?.finding_info).toMatchObject({ uid: 'bad-relay-header' });
  });
});

describe('resource limits', () => {
  it('closes connections beyond the per-sandbox limit at once', async () => {
    const small = await startRig({ up, policy: policy(up), maxConnections: 2 });
    try {
      const a = await connectTunnel(small.socketPath, `api.example.test:${up.httpsPort}`);
      const b = await connectTunnel(small.socketPath, `api.example.test:${up.httpsPort}`);
      expect([a.status, b.status]).toEqual([200, 200]);
      const c = await relayConnect(small.socketPath);
      expect(await new HttpReader(c).closed()).toBe(true);
      a.socket.destroy();
      b.socket.destroy();
    } finally {
      await small.close();
    }
  });
});

describe('server-first protocols', () => {
  it('relays a banner the server sends before the client speaks, then both ways', async () => {
    const net = await import('node:net');
    const server = net.createServer((s) => {
      s.write('220 banner ready\r\n');
      s.on('data', (d) => s.end(`250 got ${d.toString().trim()}\r\n`));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as import('node:net').AddressInfo).port;
    const r = await startRig({
      up,
      policy: `
version: 1
network_policies:
  smtp:
    endpoints:
      - { host: mail.example.test, port: ${port} }
`,
      hosts: { 'mail.example.test': '127.0.0.1' },
      allowLocal: [`127.0.0.1:${port}`],
    });
    try {
      const t = await connectTunnel(r.socketPath, `mail.example.test:${port}`);
      expect(t.status).toBe(200);
      const banner = await t.reader.reader.read();
      expect(banner?.toString()).toBe('220 banner ready\r\n');
      t.socket.write('HELO sandbox\r\n');
      const reply = await t.reader.reader.read();
      expect(reply?.toString()).toBe('250 got HELO sandbox\r\n');
      expect(await t.reader.closed()).toBe(true);
    } finally {
      await r.close();
      server.close();
    }
  });
});
