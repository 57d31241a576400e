/**
 * Upstream TLS sessions are resumed only within one sandbox, for the host, port and trust they were
 * verified for, and a server that changed its certificate is verified again (src/proxy/net/
 * upstream-sessions.ts). The upstream reports, per connection, whether it resumed a session: that is
 * what the proxy offered, since this server accepts any ticket it issued.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemoryAuditLog } from '../../src/audit/index.js';
import { EgressProxy } from '../../src/proxy/egress-proxy.js';
import { UpstreamSessions } from '../../src/proxy/net/upstream-sessions.js';
import { TlsAuthority } from '../../src/proxy/tls/tls-authority.js';
import { HttpReader, compile, connectTunnel, eventsOf, fixedCaller, send, tlsOverTunnel } from './harness.js';

const HOST = 'api.example.test';
const OTHER = 'other.example.test';

interface Upstream {
  port: number;
  /** isSessionReused() of each TLS connection the server accepted, in order. */
  resumed: boolean[];
  close(): Promise<void>;
}

/** An HTTPS server on loopback whose certificates `ca` issues (for whatever name is asked). */
async function serve(ca: TlsAuthority, port = 0, certHost?: string): Promise<Upstream> {
  const resumed: boolean[] = [];
  const server = https.createServer(
    { SNICallback: (name, cb) => cb(null, ca.contextFor({ host: certHost ?? name, kind: 'dns' })) },
    (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 2 });
      res.end('ok');
    },
  );
  server.on('secureConnection', (s: tls.TLSSocket) => resumed.push(s.isSessionReused()));
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    resumed,
    close: async () => {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  };
}

const upstreamCa = TlsAuthority.create({ sandbox: 'sessions-upstream-ca' });
let caFile: string;
let up: Upstream;
let proxy: EgressProxy;
let audit: MemoryAuditLog;
const sandboxes: Record<'a' | 'b', { socketPath: string; authority: TlsAuthority }> = {} as never;

beforeAll(async () => {
  const dir = mkdtempSync(join(tmpdir(), 'carapace-sessions-'));
  caFile = join(dir, 'ca.pem');
  writeFileSync(caFile, upstreamCa.caPem);
  up = await serve(upstreamCa);
  audit = new MemoryAuditLog();
  proxy = new EgressProxy({
    audit,
    hosts: { [HOST]: '127.0.0.1', [OTHER]: '127.0.0.1' },
    allowLocal: [`127.0.0.1:${up.port}`],
    upstreamCaFile: caFile,
    onError: (err) => {
      throw err;
    },
  });
  const policy = compile(`
version: 1
network_policies:
  api:
    endpoints:
      - { host: ${HOST}, port: ${up.port}, protocol: rest, access: read-only }
      - { host: ${OTHER}, port: ${up.port}, protocol: rest, access: read-only }
`);
  for (const name of ['a', 'b'] as const) {
    const authority = TlsAuthority.create({ sandbox: `sessions-${name}` });
    const socketPath = join(mkdtempSync(join(tmpdir(), 'carapace-sock-')), 'proxy.sock');
    await proxy.attachSandbox({
      name,
      heldBy: 'run',
      socketPath,
      generation: policy,
      callerResolver: fixedCaller(),
      authority,
    });
    sandboxes[name] = { socketPath, authority };
  }
});
afterAll(async () => {
  await proxy.close();
  await up.close();
});

/** One inspected request from sandbox `name` on a new client connection (so a new upstream one). */
async function request(name: 'a' | 'b'): Promise<number> {
  const { socketPath, authority } = sandboxes[name];
  const t = await connectTunnel(socketPath, `${HOST}:${up.port}`);
  expect(t.status).toBe(200);
  try {
    const s = await tlsOverTunnel(t, HOST, authority.caPem);
    const res = await send(new HttpReader(s), `GET /item HTTP/1.1\r\nHost: ${HOST}:${up.port}\r\n\r\n`);
    s.destroy();
    return res.status;
  } catch {
    t.socket.destroy();
    return 0; // the proxy closed the tunnel
  }
}

describe('upstream TLS session resumption', () => {
  it("Node does not check a resumed session's certificate again (why the cache's key must hold)", async () => {
    let checks = 0;
    const context = tls.createSecureContext({ ca: [upstreamCa.caPem] });
    const connect = (session?: Buffer): Promise<{ reused: boolean; session: Buffer | null }> =>
      new Promise((resolve, reject) => {
        const s = tls.connect({
          host: '127.0.0.1',
          port: up.port,
          servername: HOST,
          secureContext: context,
          session,
          checkServerIdentity: (_n, cert) => {
            checks++;
            return tls.checkServerIdentity(HOST, cert);
          },
        });
        let got: Buffer | null = null;
        s.once('error', reject);
        // TLS 1.3 tickets come after the handshake, read with the response.
        s.on('session', (ticket: Buffer) => {
          got = ticket;
        });
        s.once('secureConnect', () => {
          const reused = s.isSessionReused();
          s.write(`GET / HTTP/1.1\r\nHost: ${HOST}\r\nConnection: close\r\n\r\n`);
          s.resume();
          s.once('end', () => resolve({ reused, session: got }));
        });
      });
    const first = await connect();
    expect(first.reused).toBe(false);
    expect(checks).toBe(1);
    expect(first.session).not.toBeNull();
    const second = await connect(first.session ?? undefined);
    expect(second.reused).toBe(true);
    expect(checks).toBe(1);
  });

  it("resumes a sandbox's own sessions and never offers one sandbox's to another", async () => {
    const before = up.resumed.length;
    expect(await request('a')).toBe(200);
    expect(await request('a')).toBe(200);
    expect(await request('b')).toBe(200);
    expect(await request('b')).toBe(200);
    // a: full, then resumed; b: full (a's session was not offered), then its own resumed.
    expect(up.resumed.slice(before)).toEqual([false, true, false, true]);
  });

  it('verifies a server that changed its certificate: untrusted, or for another name', async () => {
    expect(await request('a')).toBe(200); // a holds a session for this server now
    const port = up.port;
    await up.close();
    const cases = [
      {
        ca: TlsAuthority.create({ sandbox: 'not-trusted' }),
        certHost: undefined,
        code: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
      },
      { ca: upstreamCa, certHost: 'elsewhere.example.test', code: 'ERR_TLS_CERT_ALTNAME_INVALID' },
    ];
    try {
      for (const c of cases) {
        const other = await serve(c.ca, port, c.certHost);
        try {
          const closedBefore = eventsOf(audit, 4001).length;
          expect(await request('a')).toBe(0);
          // (its handshake never completed, so it never saw a 'secureConnection')
          expect(other.resumed).toEqual([]);
          const events = eventsOf(audit, 4001).slice(closedBefore);
          const failed = `closed ${HOST}:${port}: TLS to ${HOST} failed (${c.code})`;
          expect(events.filter((e) => e.message.startsWith(failed))).toHaveLength(1);
        } finally {
          await other.close();
        }
      }
    } finally {
      up = await serve(upstreamCa, port);
    }
    // The failed handshakes removed the session: the next connection is a full one, verified.
    expect(await request('a')).toBe(200);
    expect(up.resumed).toEqual([false]);
  });
});

describe("the agent's TLS with the proxy", () => {
  /** A tunnel from sandbox `name` to `host`, TLS with the proxy offering `session`; reused or not. */
  async function agentTls(
    name: 'a' | 'b',
    host: string,
    session?: Buffer,
  ): Promise<{ reused: boolean; session: Buffer | null }> {
    const { socketPath, authority } = sandboxes[name];
    const t = await connectTunnel(socketPath, `${host}:${up.port}`);
    const rest = t.reader.reader.detach();
    if (rest.length) t.socket.unshift(rest);
    const s = tls.connect({ socket: t.socket, servername: host, ca: authority.caPem, session });
    let got: Buffer | null = null;
    s.on('session', (ticket: Buffer) => {
      got = ticket;
    });
    await new Promise<void>((resolve, reject) => {
      s.once('secureConnect', resolve);
      s.once('error', reject);
    });
    const reused = s.isSessionReused();
    const res = await send(new HttpReader(s), `GET /item HTTP/1.1\r\nHost: ${host}:${up.port}\r\n\r\n`);
    expect(res.status).toBe(200);
    s.destroy();
    return { reused, session: got };
  }

  it("resumes with the sandbox's own leaf for the same host, never across hosts or sandboxes", async () => {
    const first = await agentTls('a', HOST);
    expect(first.reused).toBe(false);
    const ticket = first.session ?? undefined;
    expect(ticket).toBeDefined();
    // The leaf's context (cached per sandbox and host) issues tickets: a client that keeps them resumes.
    expect((await agentTls('a', HOST, ticket)).reused).toBe(true);
    // Its ticket keys are that context's own: another host's, or another sandbox's, cannot read it,
    // and the handshake is a full one with that leaf (verified by the client against its own CA).
    expect((await agentTls('a', OTHER, ticket)).reused).toBe(false);
    expect((await agentTls('b', HOST, ticket)).reused).toBe(false);
  });
});

describe('UpstreamSessions', () => {
  const host = { host: HOST, kind: 'dns' as const };
  const ctx1 = tls.createSecureContext({ ca: [upstreamCa.caPem] });
  const ctx2 = tls.createSecureContext({ ca: [upstreamCa.caPem] });

  it('keys by host, SNI, port and the trust context object', () => {
    const keys = new Set([
      UpstreamSessions.keyOf(host, HOST, 443, ctx1),
      UpstreamSessions.keyOf(host, HOST, 443, ctx2),
      UpstreamSessions.keyOf(host, HOST, 8443, ctx1),
      UpstreamSessions.keyOf(host, '', 443, ctx1),
      UpstreamSessions.keyOf({ host: 'other.example.test', kind: 'dns' }, HOST, 443, ctx1),
    ]);
    expect(keys.size).toBe(5);
    expect(UpstreamSessions.keyOf(host, HOST, 443, ctx1)).toBe([...keys][0]);
  });

  it('forgets sessions after their lifetime and beyond its size, oldest first', () => {
    let now = 0;
    const cache = new UpstreamSessions(2, () => now);
    cache.set('x', Buffer.from('1'));
    cache.set('y', Buffer.from('2'));
    cache.set('z', Buffer.from('3'));
    expect(cache.get('x')).toBeUndefined();
    expect(cache.get('y')?.toString()).toBe('2');
    now = 5 * 60_000 + 1;
    expect(cache.get('z')).toBeUndefined();
    expect(cache.size).toBe(1);
    // Keeping a session also drops the ones expired, asked for or not.
    now += 60_000;
    cache.set('w', Buffer.from('4'));
    now = 2 * 5 * 60_000 + 2;
    cache.set('v', Buffer.from('5'));
    expect(cache.size).toBe(2);
    now = 3 * 5 * 60_000;
    cache.set('u', Buffer.from('6'));
    expect(cache.size).toBe(2);
    expect(cache.get('w')).toBeUndefined();
  });
});
