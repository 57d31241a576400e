/**
 * Operator in the loop, part 2: `policy.local`, the agent's policy advisor, in a real gateway
 * sandbox. The agent (python, through the proxy its environment names) reads its policy and its
 * own denials and submits a proposal with a rationale; it cannot approve anything, and it is off
 * unless the policy enables it.
 */
import { realpathSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GatewayClient } from '../../src/cli/gateway/gateway-client.js';
import { CLI } from '../helpers/cli.js';
import { cliAs, startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { FS_POLICY } from '../helpers/network.js';
import { holds } from '../helpers/premises.js';
import { startUpstreams, type Upstreams } from '../proxy/harness.js';

/** The sandbox's python3 as the kernel names it (the sandbox sees the host's /usr). */
const python = () => {
  try {
    return realpathSync('/usr/bin/python3');
  } catch {
    return null;
  }
};

/** A python program that makes one request and prints `STATUS BODY`. */
const CALL = `import json, sys, urllib.request as u
method, url = sys.argv[1], sys.argv[2]
data = sys.argv[3].encode() if len(sys.argv) > 3 else None
req = u.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
try:
    r = u.urlopen(req, timeout=20); print(r.status, r.read().decode())
except Exception as e:
    print(getattr(e, "code", "ERR"), e.read().decode() if hasattr(e, "read") else repr(e))
`;

describe.skipIf(!holds('root') || python() === null)(
  'policy.local: the policy advisor inside the sandbox',
  () => {
    let gw: TestGateway;
    let up: Upstreams;
    const cli = (args: string[]) => cliAs(gw.home, args);
    const api = () =>
      new GatewayClient({
        socket: join(gw.home, 'run', 'gateway.sock'),
        own: false,
        dirs: { state: join(gw.home, 'state'), run: join(gw.home, 'run') },
      });
    /**
     * One request from inside sandbox `name`, as its agent would make it. Asynchronous: the upstream
     * answers from this process, whose event loop must stay free meanwhile.
     */
    async function call(
      name: string,
      method: string,
      url: string,
      body?: object,
    ): Promise<{ status: number; body: Record<string, unknown> }> {
      const args = ['sandbox', 'exec', name, '--', 'python3', '-c', CALL, method, url];
      if (body) args.push(JSON.stringify(body));
      const child = spawn(process.execPath, [CLI, ...args], {
        env: { PATH: process.env.PATH, CARAPACE_HOME: gw.home, LANG: 'C.UTF-8' },
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += String(d)));
      await new Promise((resolve) => child.once('close', resolve));
      const [status, ...rest] = out.trim().split(' ');
      const text = rest.join(' ');
      return {
        status: Number(status),
        body: text.startsWith('{') ? (JSON.parse(text) as Record<string, unknown>) : { text },
      };
    }
    const policy = (advisor: boolean) => `${FS_POLICY}network_policies:
  web:
    name: web
    endpoints:
      - { host: a.test, port: ${up.httpPort} }
${
  advisor
    ? `  advisor:
    name: advisor
    endpoints:
      - { host: policy.local, port: 80 }
    binaries:
      - { path: ${python()} }
`
    : ''
}`;

    beforeAll(async () => {
      up = await startUpstreams();
      gw = await startTestGateway([
        ...['a.test', 'b.test', 'c.test'].flatMap((h) => ['--resolve', `${h}=127.0.0.1`]),
        '--allow-local',
        `127.0.0.1:${up.httpPort}`,
      ]);
      for (const [name, advisor] of [
        ['open', true],
        ['closed', false],
      ] as const) {
        await api().call('POST', '/v1/sandboxes', {
          name,
          command: ['sleep', 'infinity'],
          policy: policy(advisor),
        });
      }
    });
    afterAll(async () => {
      await gw?.stop();
      await up?.close();
    });

    it('is off unless the policy enables it', async () => {
      const r = await call('closed', 'GET', 'http://policy.local/v1/policy');
      expect(r.status).toBe(403);
      expect(r.body).toMatchObject({ error: 'policy_advisor_disabled' });
      expect(String(r.body.hint)).toContain('host: policy.local, port: 80');
    });

    it('reads the current policy and its own denials', async () => {
      const r = await call('open', 'GET', 'http://policy.local/v1/policy');
      expect(r.status).toBe(200);
      expect(r.body).toEqual({ revision: 1, policy: policy(true) });
      expect((await call('open', 'GET', `http://b.test:${up.httpPort}/x`)).status).toBe(403);
      let denials: { host: string; status: string }[] = [];
      for (let i = 0; i < 100 && !denials.some((d) => d.host === 'b.test'); i++) {
        denials = (await call('open', 'GET', 'http://policy.local/v1/denials')).body
          .denials as typeof denials;
        await new Promise((res) => setTimeout(res, 50));
      }
      expect(denials.find((d) => d.host === 'b.test')).toMatchObject({ status: 'pending' });
      // Its own only: the other sandbox's denials are not in it.
      expect((await call('closed', 'GET', `http://c.test:${up.httpPort}/x`)).status).toBe(403);
      await new Promise((res) => setTimeout(res, 200));
      const again = (await call('open', 'GET', 'http://policy.local/v1/denials')).body
        .denials as typeof denials;
      expect(again.some((d) => d.host === 'c.test')).toBe(false);
    });

    it('submits a proposal with a rationale, which only the operator can approve', async () => {
      const r = await call('open', 'POST', 'http://policy.local/v1/proposals', {
        host: 'c.test',
        port: up.httpPort,
        rationale: 'the build downloads its fixtures from c.test',
      });
      expect(r.status).toBe(201);
      const id = r.body.proposal as number;
      const p = JSON.parse(cli(['rules', 'show', String(id), '-o', 'json']).stdout) as Record<
        string,
        unknown
      >;
      expect(p).toMatchObject({
        sandbox: 'open',
        status: 'pending',
        source: 'agent',
        host: 'c.test',
        binary: python(),
        rationale: 'the build downloads its fixtures from c.test',
      });
      // The operator can tell it from a denial: where it came from, and whose words the rationale are.
      const rows = cli(['rules', 'list', 'open']).stdout.split('\n');
      expect(rows[0]).toMatch(/^ID\s+SANDBOX\s+FROM\s+HITS/);
      expect(rows.find((l) => l.includes('connect c.test:'))).toMatch(
        new RegExp(`^${id}\\s+open\\s+agent\\s`),
      );
      expect(rows.find((l) => l.includes('connect b.test:'))).toMatch(/^\d+\s+open\s+denial\s/);
      const shown = cli(['rules', 'show', String(id)]).stdout;
      expect(shown).toContain(
        '  from      the agent, through policy.local: it asked for this (nothing was refused)\n',
      );
      expect(shown).toContain(
        "  rationale the build downloads its fixtures from c.test (the agent's words)\n",
      );
      // The agent cannot approve: there is no such path, and the host stays refused.
      for (const path of [`/v1/proposals/${id}/approve`, `/v1/proposals/${id}`]) {
        expect((await call('open', 'POST', `http://policy.local${path}`, {})).status).toBe(404);
      }
      expect((await call('open', 'GET', `http://c.test:${up.httpPort}/x`)).status).toBe(403);
      // Bad submissions: one line saying what is wrong.
      const bad = await call('open', 'POST', 'http://policy.local/v1/proposals', {
        host: '*.c.test',
        port: 80,
        rationale: 'x',
      });
      expect(bad).toMatchObject({
        status: 400,
        body: { message: 'host: a host name or IPv4 address (no wildcards)' },
      });
      const allowed = await call('open', 'POST', 'http://policy.local/v1/proposals', {
        host: 'a.test',
        port: up.httpPort,
        rationale: 'already mine',
      });
      expect(allowed).toMatchObject({ status: 200, body: { status: 'allowed' } });
      // The operator approves; then it passes.
      expect(cli(['rules', 'approve', String(id)]).status).toBe(0);
      expect((await call('open', 'GET', `http://c.test:${up.httpPort}/x`)).status).toBe(200);
    });
  },
);
