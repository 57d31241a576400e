/**
 * Operator in the loop, bad input: what an operator mistypes at `carapace rules` gets one line
 * that says what is wrong in their words, a non-zero exit, and changes nothing (the proposal stays
 * pending, no policy revision is written). And `approve-all --safe` closes what the latest policy
 * already allows instead of leaving it pending as if it were risky. A real gateway, a real sandbox
 * whose agent is refused by the policy, and editors that write what a person might.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GatewayClient } from '../../src/cli/gateway/gateway-client.js';
import { REQUEST_AGENT, requester } from '../helpers/gateway-agent.js';
import { cliAs, startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { FS_POLICY } from '../helpers/network.js';
import { holds } from '../helpers/premises.js';
import { startUpstreams, type Upstreams } from '../proxy/harness.js';

interface Proposal {
  id: number;
  host: string;
  status: string;
  level: string;
  hits: number;
  samples: { path?: string }[];
  rule: { summary: string } | null;
  risks: string[];
}

const hasPython = () => spawnSync('python3', ['-c', '1']).status === 0;

describe.skipIf(!holds('root') || !hasPython())('carapace rules: bad input changes nothing', () => {
  let gw: TestGateway;
  let up: Upstreams;
  let ask: (url: string) => Promise<string>;
  let editors: string;
  const cli = (args: string[], env: NodeJS.ProcessEnv = {}) => cliAs(gw.home, args, 0, 0, env);
  const url = (host: string, path = '/x') => `http://${host}:${up.httpPort}${path}`;
  const pending = (): Proposal[] =>
    JSON.parse(cli(['rules', 'list', 'web', '-o', 'json']).stdout) as Proposal[];
  const revisions = () =>
    (JSON.parse(cli(['policy', 'history', 'web', '-o', 'json']).stdout) as unknown[]).length;
  async function proposalFor(want: (p: Proposal) => boolean): Promise<Proposal> {
    for (let i = 0; i < 200; i++) {
      const found = pending().find(want);
      if (found) return found;
      await new Promise((r) => setTimeout(r, 25));
    }
    throw new Error(`no such proposal: ${cli(['rules', 'list', 'web']).stdout}`);
  }
  /** An $EDITOR that replaces the rule's file with `text`. */
  function editor(name: string, text: string): string {
    const file = join(editors, name);
    writeFileSync(file, `#!/bin/sh\ncat > "$1" <<'EOF'\n${text}\nEOF\n`);
    chmodSync(file, 0o755);
    return file;
  }
  /** Runs `args`; expects one line on stderr, exit `status`, and nothing changed. */
  function refused(args: string[], env: NodeJS.ProcessEnv, p: Proposal, status = 2): string {
    const before = revisions();
    const r = cli(args, env);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^carapace: [^\n]+\n$/);
    expect(r.status).toBe(status);
    expect(pending().find((x) => x.id === p.id)).toMatchObject({ status: 'pending' });
    expect(revisions()).toBe(before);
    return r.stderr;
  }

  beforeAll(async () => {
    up = await startUpstreams();
    gw = await startTestGateway([
      ...['a.test', 'b.test'].flatMap((h) => ['--resolve', `${h}=127.0.0.1`]),
      '--allow-local',
      `127.0.0.1:${up.httpPort}`,
    ]);
    editors = mkdtempSync(join(tmpdir(), 'carapace-editors-'));
    const api = new GatewayClient({
      socket: join(gw.home, 'run', 'gateway.sock'),
      own: false,
      dirs: { state: join(gw.home, 'state'), run: join(gw.home, 'run') },
    });
    const view = await api.call<{ workspace: string }>('POST', '/v1/sandboxes', {
      name: 'web',
      command: ['python3', '-c', REQUEST_AGENT],
      policy: `${FS_POLICY}network_policies:
  web:
    name: web
    endpoints:
      - host: a.test
        port: ${up.httpPort}
        protocol: rest
        rules:
          - allow: { method: GET, path: "/docs/**" }
`,
    });
    ask = requester(view.workspace);
  });
  afterAll(async () => {
    await gw?.stop();
    await up?.close();
    if (editors) rmSync(editors, { recursive: true, force: true });
  });

  it('an unknown -o on approve, reject or approve-all is refused before anything is decided', async () => {
    expect(await ask(url('b.test'))).toBe('403');
    const p = await proposalFor((x) => x.host === 'b.test');
    for (const args of [
      ['rules', 'approve', String(p.id), '-o', 'yaml'],
      ['rules', 'reject', String(p.id), '-o', 'yaml'],
      ['rules', 'approve-all', '--safe', '-o', 'yaml'],
    ]) {
      expect(refused(args, {}, p)).toBe(
        'carapace: --output yaml is not one of table, json (leave -o out for table)\n',
      );
    }
    expect(cli(['rules', 'list', '-o', 'wide']).stderr).toMatch(/^carapace: --output wide is not one of /);
    expect(cli(['dashboard', '-o', 'yaml']).status).toBe(2);
  });

  it('approve --edit: a malformed edit is one line about the edited rule, and nothing is approved', async () => {
    expect(await ask(url('a.test', '/api/one'))).toBe('403');
    const l7 = await proposalFor(
      (x) => x.level === 'request' && x.samples.some((s) => s.path === '/api/one'),
    );
    const l4 = await proposalFor((x) => x.host === 'b.test');
    const cases: [Proposal, string, RegExp][] = [
      [
        l7,
        'path: "/api/**"\nport: 99999',
        /^carapace: the edited rule's port 99999: expected a TCP port, 1 to 65535\n$/,
      ],
      [l7, 'port: "443"', /^carapace: the edited rule's port "443": expected a TCP port/],
      [l7, 'method: null', /^carapace: the edited rule's method null: expected an HTTP method/],
      [l7, 'path: api/**', /^carapace: the edited rule's path "api\/\*\*": expected a path starting with \//],
      [
        l4,
        'binaries: /usr/bin/curl',
        /^carapace: the edited rule's binaries "\/usr\/bin\/curl": expected a list/,
      ],
      [l7, 'host: [unclosed', /^carapace: the edited rule is not YAML: [^\n]*[^:]\n$/],
      // What only the policy can tell: said of the edited rule too, not of a flag the operator never typed.
      [
        l7,
        `host: b.test\nport: ${up.httpPort}`,
        /^carapace: the edited rule: no endpoint b\.test:\d+ in the policy/,
      ],
      [l4, 'host: "*"', /^carapace: the edited rule: host "\*" would allow every host/],
    ];
    for (const [p, text, want] of cases) {
      const err = refused(['rules', 'approve', String(p.id), '--edit'], { EDITOR: editor('ed.sh', text) }, p);
      expect(err).toMatch(want);
      expect(err).not.toMatch(/--add-|body\./);
    }
  });

  it('approve-all --safe closes a proposal the latest revision already allows, instead of leaving it as risky', async () => {
    expect(await ask(url('b.test', '/two'))).toBe('403');
    const p = await proposalFor((x) => x.host === 'b.test');
    for (const other of pending().filter((x) => x.id !== p.id))
      expect(cli(['rules', 'reject', String(other.id)]).status).toBe(0);
    // The operator opens b.test by hand; the proposal has nothing left to approve.
    expect(cli(['policy', 'update', 'web', '--add-endpoint', `b.test:${up.httpPort}`]).status).toBe(0);
    expect(pending().find((x) => x.id === p.id)).toMatchObject({ rule: null, risks: [] });
    const before = revisions();
    const r = cli(['rules', 'approve-all', '--safe', 'web']);
    expect(r.stderr).toBe('');
    expect(r.stdout).toContain(
      `proposal ${p.id}: nothing to approve, already allowed by policy revision ${before}\n`,
    );
    expect(r.stdout).not.toContain(`proposal ${p.id} left pending`);
    expect(pending().some((x) => x.id === p.id)).toBe(false);
    const hist = JSON.parse(cli(['rules', 'history', 'web', '-o', 'json']).stdout) as Proposal[];
    expect(hist.find((h) => h.id === p.id)).toMatchObject({ status: 'superseded' });
    expect(revisions()).toBe(before);
  });
});
