/** Credential placeholders: replaced only for bound endpoints, refused elsewhere, never logged. */
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JsonlAuditLog } from '../../src/audit/index.js';
import { EgressProxy } from '../../src/proxy/egress-proxy.js';
import { TlsAuthority } from '../../src/proxy/tls/tls-authority.js';
import {
  HttpReader,
  type Rig,
  type Upstreams,
  compile,
  connectTunnel,
  fixedCaller,
  lastEvent,
  relayConnect,
  send,
  startRig,
  startUpstreams,
  tlsOverTunnel,
} from './harness.js';

const SECRET = 'ghp_S3cr3tV4lue-that-must-not-leak';
let up: Upstreams;
let rig: Rig;

const policy = (u: Upstreams): string => `
version: 1
network_policies:
  github:
    endpoints:
      - { host: api.example.test, port: ${u.httpsPort}, protocol: rest, access: full, credentials: [GITHUB_TOKEN] }
      - { host: api.example.test, port: ${u.httpPort}, protocol: rest, access: full, credentials: [GITHUB_TOKEN, MISSING] }
      - { host: other.example.test, port: ${u.httpsPort}, protocol: rest, access: full }
    binaries: [ { path: /usr/bin/curl } ]
`;

beforeAll(async () => {
  up = await startUpstreams();
  rig = await startRig({ up, policy: policy(up), credentials: new Map([['GITHUB_TOKEN', SECRET]]) });
});
afterAll(async () => {
  await rig.close();
  await up.close();
});

async function tunnel(host: string): Promise<HttpReader> {
  const t = await connectTunnel(rig.socketPath, `${host}:${up.httpsPort}`);
  expect(t.status).toBe(200);
  return new HttpReader(await tlsOverTunnel(t, host, rig.authority.caPem));
}

describe('credential placeholders', () => {
  it('puts the real secret into Bearer, Basic and the query for a bound endpoint', async () => {
    const r = await tunnel('api.example.test');
    const basic = Buffer.from('x-access-token:carapace:cred:GITHUB_TOKEN').toString('base64');
    const res = await send(
      r,
      'GET /user?token=carapace:cred:GITHUB_TOKEN&x=carapace%3Acred%3AGITHUB_TOKEN HTTP/1.1\r\nHost: api.example.test\r\n' +
        `Authorization: Bearer carapace:cred:GITHUB_TOKEN\r\nX-Basic: Basic ${basic}\r\n\r\n`,
    );
    expect(res.status).toBe(200);
    const seen = res.json<{ url: string; headers: Record<string, string> }>();
    expect(seen.headers.authorization).toBe(`Bearer ${SECRET}`);
    expect(Buffer.from((seen.headers['x-basic'] as string).slice(6), 'base64').toString()).toBe(
      `x-access-token:${SECRET}`,
    );
    expect(seen.url).toBe(`/user?token=${encodeURIComponent(SECRET)}&x=${encodeURIComponent(SECRET)}`);
    r.socket.destroy();
  });

  it('substitutes on forward requests too', async () => {
    const s = await relayConnect(rig.socketPath);
    const res = await send(
      new HttpReader(s),
      `GET http://api.example.test:${up.httpPort}/u HTTP/1.1\r\nHost: api.example.test:${up.httpPort}\r\nAuthorization: token carapace:cred:GITHUB_TOKEN\r\n\r\n`,
    );
    expect(res.status).toBe(200);
    expect(res.json<{ headers: Record<string, string> }>().headers.authorization).toBe(`token ${SECRET}`);
    s.destroy();
  });

  it('refuses a placeholder sent to a host it is not bound to (403 + finding), forwarding nothing', async () => {
    const before = up.seen.length;
    const r = await tunnel('other.example.test');
    const res = await send(
      r,
      'GET /steal HTTP/1.1\r\nHost: other.example.test\r\nAuthorization: Bearer carapace:cred:GITHUB_TOKEN\r\n\r\n',
    );
    expect(res.status).toBe(403);
    expect(res.json<{ reason: string }>().reason).toMatch(/GITHUB_TOKEN is not bound/);
    expect(up.seen.length).toBe(before);
    const f = lastEvent(rig.audit, 2004);
    expect(f.finding_info).toMatchObject({ uid: 'unbound-credential' });
    expect(f.unmapped).toMatchObject({ credential: 'GITHUB_TOKEN', sandbox: 'sb1' });
    expect(f.actor).toMatchObject({ process: { pid: 4242, file: { path: '/usr/bin/curl' } } });
  });

  it('refuses a placeholder in the path or query of an unbound host', async () => {
    const r = await tunnel('other.example.test');
    const res = await send(
      r,
      'GET /x?t=carapace%3Acred%3AGITHUB_TOKEN HTTP/1.1\r\nHost: other.example.test\r\n\r\n',
    );
    expect(res.status).toBe(403);
  });

  it('refuses a bound placeholder that has no value (unresolved)', async () => {
    const s = await relayConnect(rig.socketPath);
    const res = await send(
      new HttpReader(s),
      `GET http://api.example.test:${up.httpPort}/u HTTP/1.1\r\nHost: api.example.test:${up.httpPort}\r\nX-Key: carapace:cred:MISSING\r\n\r\n`,
    );
    expect(res.status).toBe(403);
    expect(lastEvent(rig.audit, 2004).finding_info).toMatchObject({ uid: 'unresolved-credential' });
  });

  it('never writes the secret into an audit line', () => {
    expect(rig.audit.events.length).toBeGreaterThan(5);
    expect(JSON.stringify(rig.audit.events)).not.toContain(SECRET);
  });

  it('keeps the secret out of a JSONL audit file on disk', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'carapace-audit-'));
    const log = new JsonlAuditLog(join(dir, 'audit.jsonl'));
    const proxy = new EgressProxy({
      audit: log,
      hosts: { 'api.example.test': '127.0.0.1', 'other.example.test': '127.0.0.1' },
      allowLocal: [`127.0.0.1:${up.httpsPort}`],
      upstreamCaFile: up.caFile,
    });
    const authority = TlsAuthority.create({ sandbox: 'sb2', stateDir: join(dir, 'ca') });
    const socketPath = join(dir, 'proxy.sock');
    await proxy.attachSandbox({
      name: 'sb2',
      heldBy: 'run',
      socketPath,
      generation: compile(policy(up)),
      callerResolver: fixedCaller(),
      credentials: new Map([['GITHUB_TOKEN', SECRET]]),
      authority,
    });
    for (const host of ['api.example.test', 'other.example.test']) {
      const t = await connectTunnel(socketPath, `${host}:${up.httpsPort}`);
      const r = new HttpReader(await tlsOverTunnel(t, host, authority.caPem));
      await send(
        r,
        `GET /x?q=carapace:cred:GITHUB_TOKEN HTTP/1.1\r\nHost: ${host}\r\nAuthorization: Bearer carapace:cred:GITHUB_TOKEN\r\n\r\n`,
      );
      r.socket.destroy();
    }
    await proxy.close();
    log.close();
    const text = readFileSync(join(dir, 'audit.jsonl'), 'utf8');
    expect(text.split('\n').length).toBeGreaterThan(4);
    expect(text).not.toContain(SECRET);
    expect(text).not.toContain('q=');
  });
});
