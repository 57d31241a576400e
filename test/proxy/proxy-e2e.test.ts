/**
 * End to end on the host: real curl and wget through a TCP relay that behaves like carapace-init's
 * (PROXY line, then bytes), the real /proc caller resolver, a real policy and TLS upstreams.
 */
import { execFile } from 'node:child_process';
import { realpathSync } from 'node:fs';
import net from 'node:net';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ProcCallerResolver } from '../../src/proxy/identity/caller-identity.js';
import { type Rig, type Upstreams, lastEvent, startRig, startUpstreams } from './harness.js';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const run = promisify(execFile);
const CURL = realpathSync('/usr/bin/curl');

let up: Upstreams;
let rig: Rig;
let relay: net.Server;
let relayPort: number;
let caFile: string;

/** What carapace-init's relay does, on the host's loopback. */
function startRelay(socketPath: string): Promise<net.Server> {
  const server = net.createServer((client) => {
    const upstream = net.connect(socketPath);
    upstream.write(
      `PROXY TCP4 ${client.remoteAddress} ${client.localAddress} ${client.remotePort} ${client.localPort}\r\n`,
    );
    client.pipe(upstream).pipe(client);
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
  });
  return new Promise((r) => server.listen(0, '127.0.0.1', () => r(server)));
}

beforeAll(async () => {
  up = await startUpstreams();
  rig = await startRig({
    up,
    caller: new ProcCallerResolver({ netPid: process.pid, rootPid: process.pid }),
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
      - { host: api.example.test, port: ${up.httpPort}, protocol: rest, access: read-only }
    binaries: [ { path: ${CURL} } ]
`,
  });
  relay = await startRelay(rig.socketPath);
  relayPort = (relay.address() as net.AddressInfo).port;
  caFile = join(mkdtempSync(join(tmpdir(), 'carapace-e2e-')), 'ca.pem');
  writeFileSync(caFile, rig.authority.caPem);
});
afterAll(async () => {
  relay.close();
  await rig.close();
  await up.close();
});

async function curl(args: string[]): Promise<{ code: string; body: string }> {
  const { stdout } = await run(CURL, [
    '-s',
    '-x',
    `http://127.0.0.1:${relayPort}`,
    '--cacert',
    caFile,
    '-w',
    '\n%{http_code}',
    ...args,
  ]);
  const i = stdout.lastIndexOf('\n');
  return { body: stdout.slice(0, i), code: stdout.slice(i + 1) };
}

describe('real clients through a relay', () => {
  it('curl reaches an allowed HTTPS path (TLS terminated with the sandbox CA) and is identified from /proc', async () => {
    const r = await curl([`https://api.example.test:${up.httpsPort}/repos/x`]);
    expect(r.code).toBe('200');
    expect(JSON.parse(r.body)).toMatchObject({ url: '/repos/x' });
    const ev = lastEvent(rig.audit, 4002);
    expect(ev.actor).toMatchObject({ process: { file: { path: CURL } } });
    expect((ev.actor as { process: { pid: number } }).process.pid).toBeGreaterThan(1);
  });

  it('curl gets the 403 JSON for a path the rules refuse and for a host outside the policy', async () => {
    const r = await curl([`https://api.example.test:${up.httpsPort}/admin`]);
    expect(r.code).toBe('403');
    expect(JSON.parse(r.body)).toMatchObject({ error: 'policy_denied', binary: CURL });
    const f = await curl([`http://api.example.test:${up.httpPort}/x`, '-X', 'POST', '-d', 'x']);
    expect(f.code).toBe('403');
    const g = await curl([`http://evil.example.test/`]);
    expect(g.code).toBe('403');
    expect(JSON.parse(g.body)).toMatchObject({ host: 'evil.example.test' });
  });

  it('wget, which the policy does not list, is refused', async () => {
    const out = await run(
      '/usr/bin/wget',
      ['-q', '-S', '-O', '-', `http://api.example.test:${up.httpPort}/x`],
      {
        env: { ...process.env, http_proxy: `http://127.0.0.1:${relayPort}` },
      },
    ).then(
      () => 'ok',
      (e: { stderr?: string }) => e.stderr ?? '',
    );
    expect(out).toMatch(/403/);
    const ev = lastEvent(rig.audit, 4001);
    expect(ev.disposition).toBe('Blocked');
    expect(ev.actor).toMatchObject({ process: { file: { path: realpathSync('/usr/bin/wget') } } });
  });
});
