/**
 * Operator in the loop, part 1: denials become proposals, pushed from the audit stream, in a real
 * gateway with a real sandbox whose agent makes real requests through the gateway's proxy to a
 * loopback upstream (a.test, b.test, c.test: `gateway run --resolve/--allow-local`).
 * Acceptance: a denied connection (L4) and a denied request (L7) show up in `carapace rules list`;
 * approving lets the same request pass; a rejected one does not return during its quiet period
 * however often the agent retries; an approved rule survives a gateway restart. And the 403 body's
 * hint names `carapace rules`.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GatewayClient } from '../../src/cli/gateway/gateway-client.js';
import { CLI } from '../helpers/cli.js';
import { REQUEST_AGENT, requester } from '../helpers/gateway-agent.js';
import { cliAs, startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { FS_POLICY } from '../helpers/network.js';
import { holds } from '../helpers/premises.js';
import { startUpstreams, type Upstreams } from '../proxy/harness.js';

interface Proposal {
  id: number;
  sandbox: string;
  status: string;
  level: string;
  host: string;
  port: number;
  binary: string;
  ancestors: string[];
  method: string | null;
  hits: number;
  samples: { method?: string; path?: string }[];
  rule: { kind: string; summary: string; method?: string; path?: string; binaries: string[] } | null;
  risks: string[];
  outcome: string | null;
  appliedRev: number | null;
}

const hasPython = () => spawnSync('python3', ['-c', '1']).status === 0;

describe.skipIf(!holds('root') || !hasPython())('proposals: denials the operator approves or rejects', () => {
  let gw: TestGateway;
  let up: Upstreams;
  let ask: (url: string) => Promise<string>;
  const home = () => gw.home;
  const cli = (args: string[]) => cliAs(home(), args);
  const api = () =>
    new GatewayClient({
      socket: join(home(), 'run', 'gateway.sock'),
      own: false,
      dirs: { state: join(home(), 'state'), run: join(home(), 'run') },
    });
  const list = (args: string[] = []): Proposal[] => {
    const r = cli(['rules', 'list', 'web', '-o', 'json', ...args]);
    expect(r.stderr).toBe('');
    return JSON.parse(r.stdout) as Proposal[];
  };
  /** The proposal for `host` once it is listed (pushed within milliseconds; the bound is generous). */
  async function proposalFor(host: string, want = (p: Proposal) => p.host === host): Promise<Proposal> {
    for (let i = 0; i < 200; i++) {
      const found = list().find(want);
      if (found) return found;
      await new Promise((r) => setTimeout(r, 25));
    }
    throw new Error(`no proposal for ${host}: ${cli(['rules', 'list', 'web']).stdout}`);
  }
  const gatewayArgs = () => [
    ...['a.test', 'b.test', 'c.test'].flatMap((h) => ['--resolve', `${h}=127.0.0.1`]),
    '--allow-local',
    `127.0.0.1:${up.httpPort}`,
  ];
  const url = (host: string, path = '/x') => `http://${host}:${up.httpPort}${path}`;

  beforeAll(async () => {
    up = await startUpstreams();
    gw = await startTestGateway(gatewayArgs());
    // a.test: inspected, GET under /docs only; b.test and c.test: not in the policy at all.
    const policy = `${FS_POLICY}network_policies:
  web:
    name: web
    endpoints:
      - host: a.test
        port: ${up.httpPort}
        protocol: rest
        rules:
          - allow: { method: GET, path: "/docs/**" }
`;
    const view = await api().call<{ workspace: string }>('POST', '/v1/sandboxes', {
      name: 'web',
      command: ['python3', '-c', REQUEST_AGENT],
      policy,
    });
    ask = requester(view.workspace);
  });
  afterAll(async () => {
    await gw?.stop();
    await up?.close();
  });

  it('a denied connection (L4) is a proposal with hits, binary and an endpoint rule; approving lets the same request pass', async () => {
    expect(await ask(url('b.test'))).toBe('403');
    expect(await ask(url('b.test', '/again'))).toBe('403');
    const p = await proposalFor('b.test', (x) => x.host === 'b.test' && x.hits >= 2);
    expect(p).toMatchObject({ status: 'pending', level: 'connect', port: up.httpPort, hits: 2 });
    expect(p.binary).toMatch(/python3/);
    expect(p.rule).toMatchObject({ kind: 'endpoint', binaries: [p.binary] });
    expect(p.rule!.summary).toBe(`allow ${p.binary} to connect to b.test:${up.httpPort}`);
    expect(p.risks).toEqual([]);
    // The table a person reads.
    const table = cli(['rules', 'list']).stdout;
    expect(table).toMatch(new RegExp(`^ID\\s+SANDBOX\\s+FROM\\s+HITS\\s+LAST\\s+DENIED`));
    expect(table).toMatch(new RegExp(`^${p.id}\\s+web\\s+denial\\s+2\\s`, 'm'));
    expect(table).toContain(`connect b.test:${up.httpPort}`);

    const approve = cli(['rules', 'approve', String(p.id)]);
    expect(approve.stderr).toBe('');
    expect(approve.stdout).toMatch(
      new RegExp(`^proposal ${p.id} approved: allow .* policy revision 2, applied live\\n$`),
    );
    expect(await ask(url('b.test'))).toBe('200');
    // Decided, with who and which revision; the policy's history has the revision.
    const hist = JSON.parse(cli(['rules', 'history', 'web', '-o', 'json']).stdout) as Proposal[];
    expect(hist.find((h) => h.id === p.id)).toMatchObject({ status: 'approved', appliedRev: 2 });
    const revs = JSON.parse(cli(['policy', 'history', 'web', '-o', 'json']).stdout) as {
      action: string;
      source: string;
      proposal: number | null;
      diff: string[];
    }[];
    expect(revs.at(-1)).toMatchObject({ action: 'update', source: 'approve', proposal: p.id });
    expect(revs[0]).toMatchObject({ source: 'create', proposal: null });
    // The table says so too: from the revision to the proposal (and back: appliedRev above).
    expect(cli(['policy', 'history', 'web']).stdout).toMatch(
      new RegExp(
        `^rev 2 \\(current\\)  \\S+  uid \\d+( \\(\\S+\\))?  approve of proposal ${p.id}, applied live  sha256:`,
      ),
    );
    expect(revs.at(-1)!.diff.join('\n')).toContain(`b.test:${up.httpPort}`);
    expect(list().some((x) => x.host === 'b.test')).toBe(false);
  });

  it('a denied request (L7) is a proposal with a redacted sample and a method + path rule; approving lets it pass', async () => {
    const secret = 'sk-live-0123456789abcdefghijklmnop';
    expect(await ask(url('a.test', `/api/items/${secret}`))).toBe('403');
    const p = await proposalFor('a.test');
    expect(p).toMatchObject({ level: 'request', method: 'GET' });
    expect(p.samples.map((s) => s.path)).toEqual(['/api/items/{redacted}']);
    expect(JSON.stringify(p)).not.toContain(secret);
    expect(p.rule).toMatchObject({ kind: 'request', method: 'GET', path: '/api/items/*' });
    expect(p.risks.some((r) => r.startsWith('wildcard path'))).toBe(true); // the redacted segment
    // approve-all --safe leaves a proposal with risk notes alone.
    const safe = cli(['rules', 'approve-all', '--safe', 'web']);
    expect(safe.stdout).toContain(`proposal ${p.id} left pending (1 risk note)`);
    expect(cli(['rules', 'approve-all']).stderr).toMatch(/repeat with --safe/);

    expect(cli(['rules', 'approve', String(p.id)]).status).toBe(0);
    expect(await ask(url('a.test', `/api/items/${secret}`))).toBe('200');
    expect(await ask(url('a.test', '/api/other'))).toBe('403'); // no wider than the samples
  });

  it('a rejected proposal does not come back during its quiet period, however often the agent retries', async () => {
    expect(await ask(url('c.test'))).toBe('403');
    const p = await proposalFor('c.test');
    const reject = cli(['rules', 'reject', String(p.id), '--for', '1h']);
    expect(reject.stderr).toBe('');
    expect(reject.stdout).toMatch(new RegExp(`^proposal ${p.id} rejected until \\S+: connect c.test`));
    for (let i = 0; i < 5; i++) expect(await ask(url('c.test'))).toBe('403');
    // A later denial of another host is listed: the stream is live, and c.test is not in it.
    expect(await ask(url('d.test.invalid'))).not.toBe('200');
    await proposalFor('d.test.invalid').catch(() => undefined);
    expect(list().some((x) => x.host === 'c.test')).toBe(false);
    const hist = JSON.parse(cli(['rules', 'history', 'web', '-o', 'json']).stdout) as Proposal[];
    expect(hist.find((h) => h.id === p.id)).toMatchObject({ status: 'rejected', hits: 6 });
    expect(cli(['rules', 'reject', String(p.id), '--for', 'soon']).stderr).toMatch(
      /--for soon: expected a duration such as 90s/,
    );
  });

  it('re-checks a proposal made against an older revision: one the latest allows is closed, no revision written', async () => {
    expect(await ask(url('a.test', '/docs2/x'))).toBe('403');
    const p = await proposalFor('a.test', (x) => x.samples.some((s) => s.path === '/docs2/x'));
    const update = cli(['policy', 'update', 'web', '--add-rule', `a.test:${up.httpPort}:GET:/docs2/**`]);
    expect(update.stderr).toBe('');
    const before = (JSON.parse(cli(['policy', 'history', 'web', '-o', 'json']).stdout) as unknown[]).length;
    const r = cli(['rules', 'approve', String(p.id)]);
    expect(r.stdout).toMatch(
      new RegExp(`^proposal ${p.id}: nothing to approve, already allowed by policy revision ${before}\n$`),
    );
    expect((JSON.parse(cli(['policy', 'history', 'web', '-o', 'json']).stdout) as unknown[]).length).toBe(
      before,
    );
    expect(cli(['rules', 'approve', String(p.id)]).stderr).toMatch(/is already superseded/);
  });

  it('approve --edit: the operator widens the rule in an editor before it is written', async () => {
    expect(await ask(url('a.test', '/edit/one'))).toBe('403');
    const p = await proposalFor('a.test', (x) => x.samples.some((s) => s.path === '/edit/one'));
    expect(p.rule).toMatchObject({ method: 'GET', path: '/edit/one' });
    const r = cliAs(home(), ['rules', 'approve', String(p.id), '--edit'], 0, 0, {
      EDITOR: 'sed -i s#/edit/one#/edit/**#',
    });
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(/approved: allow GET \/edit\/\*\* on a\.test/);
    expect(await ask(url('a.test', '/edit/two'))).toBe('200');
    const bad = cliAs(home(), ['rules', 'approve', '1', '--edit'], 0, 0, { EDITOR: 'true' });
    expect(bad.stderr).toMatch(/is already approved/);
  });

  it('approve --edit with binaries []: the approval says it admits any program, and the entry has no binaries', async () => {
    expect(await ask(url('d.test'))).toBe('403');
    const p = await proposalFor('d.test');
    expect(p.risks).toEqual([]);
    // An editor that empties the list, as an operator might to let a helper program in too.
    const dir = mkdtempSync(join(tmpdir(), 'carapace-editor-'));
    const editor = join(dir, 'empty-binaries');
    writeFileSync(editor, `#!/bin/sh\nsed -i -e 's#^binaries:.*#binaries: []#' -e '/^  - /d' "$1"\n`, {
      mode: 0o755,
    });
    try {
      const r = cliAs(home(), ['rules', 'approve', String(p.id), '--edit'], 0, 0, { EDITOR: editor });
      expect(r.stderr).toBe('');
      expect(r.stdout).toMatch(
        new RegExp(`^proposal ${p.id} approved: allow any program to connect to d\\.test:`),
      );
      expect(r.stdout).toContain(
        `\n  risk: binaries [] admits any program in the sandbox, not only ${p.binary}\n`,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    const text = cli(['policy', 'get', 'web']).stdout;
    const entry = text.slice(text.indexOf('allow_d_test_'));
    expect(entry).toContain('host: d.test');
    expect(entry.split(/\n {2}\S/)[0]).not.toContain('binaries');
  });

  it("names the real command in the 403 body's hint", () => {
    const r = cli([
      'sandbox',
      'exec',
      'web',
      '--',
      'python3',
      '-c',
      `import urllib.request as u\ntry: u.urlopen("${url('c.test')}")\nexcept Exception as e: print(e.read().decode())`,
    ]);
    const body = JSON.parse(r.stdout) as { error: string; hint: string };
    expect(body.error).toBe('policy_denied');
    expect(body.hint).toContain('carapace rules list');
    // …and only the gateway's commands: a gateway sandbox has no policy file of a run.
    expect(body.hint).not.toContain('POLICY_FILE');
    // …and that command exists.
    expect(spawnSync(process.execPath, [CLI, 'rules', 'list', '--help']).status).toBe(0);
  });

  it('an approved rule survives a gateway restart; an unknown proposal is one line, exit 3', async () => {
    await gw.stop();
    gw = await startTestGateway(gatewayArgs(), gw.home);
    expect(await ask(url('b.test'))).toBe('200');
    expect(await ask(url('a.test', '/api/items/x'))).toBe('200');
    const r = cli(['rules', 'approve', '9999']);
    expect(r.status).toBe(3);
    expect(r.stderr).toBe('carapace: no proposal 9999 (carapace rules list shows yours)\n');
  });
});
