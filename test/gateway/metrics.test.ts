/**
 * The gateway as a daemon people already run (the "always on" issue, part 3): `/metrics` in the
 * Prometheus text format on the API sockets, each user seeing only their own sandboxes' series;
 * what the proxy did for a sandbox counted per sandbox (connections, refusals, bytes) from real
 * requests made inside real sandboxes; the gateway's own log as JSON lines; `gateway status`.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GatewayClient } from '../../src/cli/gateway/gateway-client.js';
import { CLI } from '../helpers/cli.js';
import { REQUEST_AGENT, requester } from '../helpers/gateway-agent.js';
import { cliAs, makeUser, startTestGateway, type TestGateway, type TestUser } from '../helpers/gateway.js';
import { FS_POLICY } from '../helpers/network.js';
import { holds, requires } from '../helpers/premises.js';
import { startUpstreams, type Upstreams } from '../proxy/harness.js';

const reachable = () =>
  spawnSync(process.execPath, [CLI, '--version'], { uid: 65534, gid: 65534, encoding: 'utf8' }).status === 0;

interface Scrape {
  contentType: string;
  text: string;
  /** `name{labels}` → value, labels as written. */
  samples: Map<string, number>;
  types: Map<string, string>;
}

/**
 * Reads an exposition, checking it as a scraper would: every sample belongs to a family announced
 * by # HELP and # TYPE lines before it, families are not split, no series appears twice, names and
 * label names are valid, values are numbers.
 */
function parseExposition(text: string): Omit<Scrape, 'contentType' | 'text'> {
  const samples = new Map<string, number>();
  const types = new Map<string, string>();
  const helped = new Set<string>();
  const done = new Set<string>();
  let current: string | null = null;
  expect(text.endsWith('\n')).toBe(true);
  for (const line of text.slice(0, -1).split('\n')) {
    const meta = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.+)$/.exec(line);
    if (meta) {
      const [, kind, name] = meta;
      if (kind === 'HELP') {
        expect(helped.has(name!), `second HELP for ${name}`).toBe(false);
        helped.add(name!);
        if (current !== null) done.add(current);
        current = name!;
      } else {
        expect(['gauge', 'counter']).toContain(meta[3]);
        types.set(name!, meta[3]!);
      }
      continue;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$/.exec(line);
    expect(m, `not a sample line: ${line}`).not.toBeNull();
    const [, name, labels = '', value] = m!;
    expect(name, `${name} outside its family`).toBe(current);
    expect(done.has(name!)).toBe(false);
    expect(types.has(name!), `${name} has no TYPE`).toBe(true);
    if (labels) {
      for (const pair of labels.slice(1, -1).split(/,(?=[a-zA-Z_])/)) {
        expect(pair).toMatch(/^[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"$/);
      }
    }
    expect(Number.isNaN(Number(value)), `${line}: value`).toBe(false);
    const key = `${name}${labels}`;
    expect(samples.has(key), `duplicate series ${key}`).toBe(false);
    samples.set(key, Number(value));
  }
  return { samples, types };
}

describe.skipIf(!holds('root') || !reachable())('the gateway as a daemon: metrics, logs, status', () => {
  let gw: TestGateway;
  let up: Upstreams;
  let alice: TestUser;
  let bob: TestUser;
  const as = (u: TestUser | null, args: string[]) => cliAs(gw.home, args, u?.uid ?? 0, u?.gid ?? 0);
  const socketOf = (u: TestUser | null) =>
    u ? join(gw.home, 'run', 'users', `${u.uid}.sock`) : join(gw.home, 'run', 'gateway.sock');
  const api = (u: TestUser | null) =>
    new GatewayClient({
      socket: socketOf(u),
      own: false,
      dirs: { state: join(gw.home, 'state'), run: join(gw.home, 'run') },
    });
  /** GET /metrics as `u` (through their own socket, as their scraper would). */
  const scrape = (u: TestUser | null): Promise<Scrape> =>
    new Promise((resolve, reject) => {
      const req = request({ socketPath: socketOf(u), path: '/metrics' }, (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () => {
          expect(res.statusCode).toBe(200);
          resolve({ contentType: String(res.headers['content-type']), text, ...parseExposition(text) });
        });
      });
      req.on('error', reject);
      req.end();
    });
  const policy = (hosts: string[]) =>
    `${FS_POLICY}network_policies:
  web:
    endpoints:
${hosts.map((h) => `      - { host: ${h}, port: ${up.httpPort}, protocol: rest, access: full }`).join('\n')}
`;

  beforeAll(async () => {
    up = await startUpstreams();
    alice = makeUser('cpmeal', ['carapace']);
    bob = makeUser('cpmebo', ['carapace']);
    gw = await startTestGateway([
      '--resolve',
      'a.test=127.0.0.1',
      '--resolve',
      'b.test=127.0.0.1',
      '--allow-local',
      `127.0.0.1:${up.httpPort}`,
    ]);
  });
  afterAll(async () => {
    await gw?.stop();
    await up?.close();
    alice?.remove();
    bob?.remove();
  });

  it("counts what the proxy did for each sandbox, and shows each user only their own sandboxes' series", async () => {
    const m1 = await api(alice).call<{ workspace: string }>('POST', '/v1/sandboxes', {
      name: 'm1',
      command: ['python3', '-c', REQUEST_AGENT],
      policy: policy(['a.test']),
    });
    await api(bob).call('POST', '/v1/sandboxes', { name: 'b1', command: ['sleep', '300'] });
    const ask = requester(m1.workspace);
    expect(await ask(`http://a.test:${up.httpPort}/bytes/100000`)).toBe('200');
    expect(await ask(`http://a.test:${up.httpPort}/x`)).toBe('200');
    expect(await ask(`http://b.test:${up.httpPort}/x`)).toBe('403');
    expect(await ask(`http://b.test:${up.httpPort}/y`)).toBe('403');

    // The agent has its answers; the proxy may not have seen its side of the last close yet.
    let mine: Scrape;
    const a = (series: string, extra = '') =>
      mine.samples.get(`${series}{sandbox="m1",owner="${alice.uid}"${extra}}`);
    do mine = await scrape(alice);
    while (a('carapace_proxy_connections') !== 0);
    expect(mine.contentType).toBe('text/plain; version=0.0.4; charset=utf-8');
    expect(a('carapace_proxy_connections_total')).toBe(4); // urllib: one connection per request
    expect(a('carapace_proxy_denials_total', ',kind="connect"')).toBe(2);
    expect(a('carapace_proxy_denials_total', ',kind="request"')).toBe(0);
    expect(a('carapace_proxy_bytes_total', ',direction="to_sandbox"')).toBeGreaterThan(100_000);
    expect(a('carapace_proxy_bytes_total', ',direction="from_sandbox"')).toBeGreaterThan(0);
    expect(a('carapace_proxy_connections')).toBe(0);
    expect(a('carapace_proxy_tunnels')).toBe(0);
    expect(a('carapace_proxy_policy_generation')).toBe(1);
    expect(a('carapace_sandbox_policy_revision')).toBe(1);
    expect(a('carapace_sandbox_restarts_total')).toBe(0);
    expect(a('carapace_sandbox_state', ',state="running"')).toBe(1);
    expect(a('carapace_sandbox_state', ',state="stopped"')).toBe(0);
    expect(mine.samples.get('carapace_sandboxes{state="running"}')).toBe(1);
    expect(mine.types.get('carapace_proxy_bytes_total')).toBe('counter');
    expect(mine.types.get('carapace_sandboxes')).toBe('gauge');
    // Bob's sandbox is not in alice's scrape, nor hers in his.
    expect(mine.text).not.toContain('sandbox="b1"');
    const his = await scrape(bob);
    expect(his.text).not.toContain('sandbox="m1"');
    expect(his.samples.get(`carapace_sandbox_state{sandbox="b1",owner="${bob.uid}",state="running"}`)).toBe(
      1,
    );
    // Root sees both.
    const all = await scrape(null);
    expect(all.samples.get('carapace_sandboxes{state="running"}')).toBe(2);
    expect(all.text).toContain('sandbox="m1"');
    expect(all.text).toContain('sandbox="b1"');
    // The gateway's own series, the same for everyone.
    for (const s of [mine, his, all]) {
      for (const q of ['0.5', '0.9', '0.99', '1']) {
        expect(s.samples.get(`carapace_event_loop_lag_seconds{quantile="${q}"}`)).toBeGreaterThanOrEqual(0);
      }
      expect(s.samples.get('process_resident_memory_bytes')).toBeGreaterThan(0);
      expect(s.samples.get('carapace_gateway_start_time_seconds')).toBeGreaterThan(1.6e9);
    }

    // A live policy change shows as a new revision and generation; a stopped sandbox has no proxy series.
    expect(
      as(alice, ['policy', 'update', 'm1', '--add-endpoint', `b.test:${up.httpPort}:full:rest`]).status,
    ).toBe(0);
    expect(await ask(`http://b.test:${up.httpPort}/z`)).toBe('200');
    const after = await scrape(alice);
    const b = (series: string, extra = '') =>
      after.samples.get(`${series}{sandbox="m1",owner="${alice.uid}"${extra}}`);
    expect(b('carapace_proxy_policy_generation')).toBe(2);
    expect(b('carapace_sandbox_policy_revision')).toBe(2);
    expect(b('carapace_proxy_connections_total')).toBe(5);
    expect(b('carapace_proxy_denials_total', ',kind="connect"')).toBe(2);
    expect(as(alice, ['sandbox', 'stop', 'm1', '--grace', '1']).status).toBe(0);
    const stopped = await scrape(alice);
    expect(stopped.text).not.toMatch(/carapace_proxy_\w+\{sandbox="m1"/);
    expect(
      stopped.samples.get(`carapace_sandbox_state{sandbox="m1",owner="${alice.uid}",state="stopped"}`),
    ).toBe(1);
    expect(stopped.samples.get('carapace_sandboxes{state="stopped"}')).toBe(1);
  });

  it("reports each running sandbox's CPU time (reaped children included) and resident memory", async (ctx) => {
    requires(ctx, 'proc-children'); // the walk from the init to the agent
    // A child burns CPU and exits (its time then counts through its parent); the agent then holds
    // 64 MiB it has touched, and says so in its workspace.
    const agent = [
      'import subprocess, sys, time',
      'subprocess.run([sys.executable, "-c", "import time\\nend = time.process_time() + 0.4\\nwhile time.process_time() < end: pass"], check=True)',
      'held = bytearray(64 << 20)',
      'for i in range(0, len(held), 4096): held[i] = 1',
      'open("/sandbox/ready", "w").close()',
      'time.sleep(300)',
    ].join('\n');
    const u = await api(alice).call<{ workspace: string }>('POST', '/v1/sandboxes', {
      name: 'busy',
      command: ['python3', '-c', agent],
    });
    for (let i = 0; i < 600 && !existsSync(join(u.workspace, 'ready')); i++)
      await new Promise((r) => setTimeout(r, 50));
    expect(existsSync(join(u.workspace, 'ready'))).toBe(true);
    const m = await scrape(alice);
    const v = (series: string) => m.samples.get(`${series}{sandbox="busy",owner="${alice.uid}"}`);
    expect(m.types.get('carapace_sandbox_cpu_seconds_total')).toBe('counter');
    expect(m.types.get('carapace_sandbox_memory_bytes')).toBe('gauge');
    expect(v('carapace_sandbox_cpu_seconds_total')).toBeGreaterThanOrEqual(0.4);
    expect(v('carapace_sandbox_memory_bytes')).toBeGreaterThan(64 * 2 ** 20);
    expect(v('carapace_sandbox_memory_bytes')).toBeLessThan(512 * 2 ** 20);
    expect(as(alice, ['sandbox', 'delete', 'busy']).status).toBe(0);
    const gone = await scrape(alice);
    expect(gone.text).not.toContain('sandbox="busy"');
  });

  it('says its pid, version, uptime, socket and options; logs what changes as JSON lines', async () => {
    await api(alice).call('POST', '/v1/sandboxes', { name: 'logged', command: ['true'], start: false });
    expect(as(alice, ['policy', 'update', 'logged', '--add-endpoint', 'c.test:443']).status).toBe(0);
    const status = as(alice, ['gateway', 'status']);
    expect(status.stdout).toMatch(
      // The socket she reaches it through: her own.
      new RegExp(
        `^gateway pid ${gw.child.pid}, version \\S+, up \\d+s, socket ${gw.home}/run/users/${alice.uid}\\.sock\\n` +
          `options: --resolve a\\.test=127\\.0\\.0\\.1 --resolve b\\.test=127\\.0\\.0\\.1 --allow-local 127\\.0\\.0\\.1:${up.httpPort}\\n$`,
      ),
    );
    const json = JSON.parse(as(alice, ['gateway', 'status', '-o', 'json']).stdout) as Record<string, unknown>;
    expect(json).toMatchObject({ pid: gw.child.pid, caller: { uid: alice.uid, admin: false } });
    expect(json.options).toEqual([
      '--resolve',
      'a.test=127.0.0.1',
      '--resolve',
      'b.test=127.0.0.1',
      '--allow-local',
      `127.0.0.1:${up.httpPort}`,
    ]);
    expect(json.uptimeSeconds).toBeGreaterThanOrEqual(0);

    // The gateway writes its log to a pipe this process reads as it gets the chance.
    while (!gw.output().includes('/v1/sandboxes/logged/policy/operations'))
      await new Promise((r) => setTimeout(r, 20));
    const lines = gw
      .output()
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    for (const l of lines) {
      expect(typeof l.t).toBe('string');
      expect(['info', 'warn', 'error']).toContain(l.level);
      expect(typeof l.msg).toBe('string');
    }
    expect(lines).toContainEqual(
      expect.objectContaining({
        msg: 'policy revision stored',
        sandbox: 'logged',
        owner: alice.uid,
        revision: 2,
        author: alice.uid,
      }),
    );
    expect(lines).toContainEqual(
      expect.objectContaining({
        msg: 'api request',
        method: 'POST',
        path: '/v1/sandboxes/logged/policy/operations',
        uid: alice.uid,
        status: 200,
      }),
    );
    // Reads that succeed (a scraper every few seconds) are not logged.
    expect(lines.some((l) => l.path === '/metrics')).toBe(false);

    // The API document has the policy routes and /metrics, as text.
    const doc = await api(alice).call<{
      paths: Record<string, Record<string, { responses: Record<string, { content?: object }> }>>;
    }>('GET', '/openapi.json');
    expect(Object.keys(doc.paths['/v1/sandboxes/{name}/policy']!).sort()).toEqual(['get', 'put']);
    expect(Object.keys(doc.paths['/v1/sandboxes/{name}/policy/revisions']!)).toEqual(['get']);
    expect(Object.keys(doc.paths['/v1/sandboxes/{name}/policy/operations']!)).toEqual(['post']);
    expect(Object.keys(doc.paths['/v1/sandboxes/{name}/policy/rollback']!)).toEqual(['post']);
    expect(Object.keys(doc.paths['/metrics']!.get!.responses['200']!.content!)).toEqual([
      'text/plain; version=0.0.4; charset=utf-8',
    ]);
  });
});
