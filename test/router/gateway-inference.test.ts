/**
 * The router in the gateway, end to end: providers stored per user with their key sealed (never in
 * argv, the gateway's log, an API answer or the audit), sandboxes whose agents (curl, inside real
 * sandboxes) call https://inference.local; routes changed live for one sandbox and not another;
 * budgets that refuse, or send the call to a local route, and usage that survives a restart.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { cliAs, startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { FakeProvider, startFake } from '../helpers/fake-providers.js';
import { CLI } from '../helpers/cli.js';
import { FS_POLICY, runCli } from '../helpers/network.js';
import { holds } from '../helpers/premises.js';
import { policyFile } from '../helpers/sandbox.js';
import { commandLines } from '../helpers/processes.js';

const KEY_ONE = 'sk-gateway-provider-one-8c1d2e3f4a5b6c7d8e9f';
const KEY_TWO = 'sk-gateway-provider-two-1a2b3c4d5e6f7a8b9c0d';

/**
 * The agent: each time /sandbox/go appears, one chat completion through inference.local with a
 * dummy key; the answer (or curl's error) in /sandbox/out.
 */
const AGENT = [
  'sh',
  '-c',
  `while :; do
     if [ -e /sandbox/go ]; then
       rm -f /sandbox/go
       curl -sS -o /sandbox/out.tmp -w '%{http_code}' https://inference.local/v1/chat/completions \\
         -H 'authorization: Bearer sk-dummy' -H 'content-type: application/json' \\
         -d '{"model":"whatever","messages":[{"role":"user","content":"hi from '"$(hostname)"'"}]}' > /sandbox/status.tmp 2>&1
       mv /sandbox/out.tmp /sandbox/out.json 2>/dev/null; mv /sandbox/status.tmp /sandbox/status
     fi
     sleep 0.05
   done`,
];

describe.skipIf(!holds('root'))('the gateway’s router', () => {
  let gw: TestGateway;
  let one: FakeProvider;
  let two: FakeProvider;
  let local: FakeProvider;
  const env = { KEY_ONE, KEY_TWO };
  const cli = (args: string[]) => cliAs(gw.home, args, 0, 0, env);
  const json = <T>(args: string[]): T => {
    const r = cli([...args, '-o', 'json']);
    if (r.status !== 0) throw new Error(`${args.join(' ')}: ${r.stderr}`);
    return JSON.parse(r.stdout) as T;
  };
  const workspace = (name: string) => json<{ workspace: string }>(['sandbox', 'get', name]).workspace;

  /** One call by the agent of `name`: its HTTP status and body. */
  async function call(name: string): Promise<{ status: number; body: string }> {
    const ws = workspace(name);
    rmSync(join(ws, 'status'), { force: true });
    rmSync(join(ws, 'out.json'), { force: true });
    writeFileSync(join(ws, 'go'), '');
    while (!existsSync(join(ws, 'status'))) await sleep(20);
    const status = Number(readFileSync(join(ws, 'status'), 'utf8').trim());
    const body = existsSync(join(ws, 'out.json')) ? readFileSync(join(ws, 'out.json'), 'utf8') : '';
    return { status, body };
  }

  beforeAll(async () => {
    one = await startFake({ kind: 'openai', key: KEY_ONE });
    two = await startFake({ kind: 'openai', key: KEY_TWO });
    local = await startFake({ kind: 'openai' });
    gw = await startTestGateway();
  });
  afterAll(async () => {
    await gw?.stop();
    await Promise.all([one?.close(), two?.close(), local?.close()]);
  });

  it('stores providers with sealed keys and shows only fingerprints', async () => {
    const made = cli([
      'provider',
      'create',
      'one',
      '--type',
      'openai-compatible',
      '--base-url',
      one.url,
      '--credential-env',
      'KEY_ONE',
    ]);
    expect(made.status, made.stderr).toBe(0);
    // The key on standard input works the same.
    const viaStdin = spawnSync(
      process.execPath,
      [
        CLI,
        'provider',
        'create',
        'two',
        '--type',
        'openai-compatible',
        '--base-url',
        two.url,
        '--credential-stdin',
      ],
      {
        input: `${KEY_TWO}\n`,
        encoding: 'utf8',
        env: { PATH: process.env.PATH, CARAPACE_HOME: gw.home },
      },
    );
    expect(viaStdin.status, viaStdin.stderr).toBe(0);
    expect(cli(['provider', 'create', 'local', '--type', 'vllm', '--base-url', local.url]).status).toBe(0);
    const list = json<{ name: string; fingerprint: string | null }[]>(['provider', 'list']);
    expect(list.map((p) => p.name)).toEqual(['local', 'one', 'two']);
    expect(list.find((p) => p.name === 'one')!.fingerprint).toMatch(/^sha256:[0-9a-f]{12}$/);
    expect(list.find((p) => p.name === 'local')!.fingerprint).toBeNull();
    const everything =
      cli(['provider', 'get', 'one', '-o', 'json']).stdout + cli(['provider', 'list']).stdout;
    expect(everything).not.toContain(KEY_ONE);
    // Asynchronously: the fake provider answers from this process, which spawnSync would block.
    const test = await runCli(['provider', 'test', 'one', '-o', 'json'], { home: gw.home, env });
    expect(JSON.parse(test.stdout)).toMatchObject({ ok: true, models: ['fake-model'] });
    expect(one.seenKeys().at(-1)).toBe(KEY_ONE);
    // Bad input: one line, non-zero, nothing stored.
    const bad = cli(['provider', 'create', 'x', '--type', 'openai', '--credential-env', 'NOT_SET_ANYWHERE']);
    expect(bad.status).not.toBe(0);
    expect(bad.stderr.trim().split('\n')).toHaveLength(1);
    expect(cli(['provider', 'get', 'x']).status).toBe(3);
  });

  it('--credential-stdin at a terminal reads one line, typed without echo', async (ctx) => {
    // `script` (util-linux) gives the command a terminal of its own: the premise of this test.
    if (spawnSync('script', ['--version']).status !== 0)
      ctx.skip('needs script(1) to give the CLI a terminal');
    const typed = 'sk-typed-at-a-terminal-4d5e6f7a8b9c0d1e';
    const child = spawn(
      'script',
      [
        '-qec',
        `${process.execPath} ${CLI} provider create typed --type openai --credential-stdin`,
        '/dev/null',
      ],
      { env: { PATH: process.env.PATH, CARAPACE_HOME: gw.home, LANG: 'C.UTF-8' } },
    );
    let out = '';
    const prompted = new Promise<void>((resolve) =>
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString('utf8');
        if (out.includes('API key')) resolve();
      }),
    );
    const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
    // Typed only once the prompt is up (the terminal is then no longer echoing).
    await prompted;
    child.stdin.write(`${typed}\r`);
    expect(await exited).toBe(0);
    expect(out).not.toContain(typed);
    expect(json<{ fingerprint: string }>(['provider', 'get', 'typed']).fingerprint).toBe(
      `sha256:${createHash('sha256').update(typed).digest('hex').slice(0, 12)}`,
    );
    expect(cli(['provider', 'delete', 'typed']).status).toBe(0);
  });

  it('carapace run uses the caller’s stored providers too (read from the gateway’s store)', async () => {
    const policy = policyFile(`${FS_POLICY}inference:
  routes:
    main: { provider: one, model: run-model }
`);
    const before = one.requests.length;
    const r = await runCli(
      [
        'run',
        '--policy',
        policy,
        '--',
        'curl',
        '-sS',
        'https://inference.local/v1/chat/completions',
        '-H',
        'content-type: application/json',
        '-d',
        '{"model":"x","messages":[{"role":"user","content":"from a run"}]}',
      ],
      { home: gw.home },
    );
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({
      choices: [{ message: { content: 'You said: from a run' } }],
    });
    expect(one.requests.length).toBe(before + 1);
    expect(one.requests.at(-1)!.body).toMatchObject({ model: 'run-model' });
    expect(one.seenKeys().at(-1)).toBe(KEY_ONE);
  });

  it('changes one sandbox’s routes live: its next call uses them, the other sandbox is untouched', async () => {
    const policy = policyFile(`${FS_POLICY}inference:
  routes:
    main: { provider: one, model: model-one }
  default: main
`);
    for (const name of ['left', 'right'])
      expect(cli(['sandbox', 'create', '--name', name, '--policy', policy, '--', ...AGENT]).stdout).toBe(
        `${name} running\n`,
      );
    const l1 = await call('left');
    const r1 = await call('right');
    expect(l1.status).toBe(200);
    expect(JSON.parse(l1.body)).toMatchObject({
      choices: [{ message: { content: 'You said: hi from left' } }],
    });
    expect(r1.status).toBe(200);
    expect(one.requests.at(-1)!.body).toMatchObject({ model: 'model-one' });
    const twoBefore = two.requests.length;

    const set = cli(['inference', 'set', 'left', '--route', 'main=two/model-two']);
    expect(set.status, set.stderr).toBe(0);
    const l2 = await call('left');
    expect(l2.status).toBe(200);
    expect(two.requests.length).toBe(twoBefore + 1);
    expect(two.requests.at(-1)!.body).toMatchObject({ model: 'model-two' });
    expect(two.seenKeys().at(-1)).toBe(KEY_TWO);
    const oneBefore = one.requests.length;
    const r2 = await call('right');
    expect(r2.status).toBe(200);
    expect(one.requests.length).toBe(oneBefore + 1);
    expect(one.requests.at(-1)!.body).toMatchObject({ model: 'model-one' });
    // No restart: the same run of the agent.
    expect(json<{ restarts: number; state: string }>(['sandbox', 'get', 'left'])).toMatchObject({
      restarts: 0,
      state: 'running',
    });
    expect(json<{ policyRev: number }>(['sandbox', 'get', 'left']).policyRev).toBe(2);
    // The revision says it came from `inference set`, not from a `policy set`.
    expect(json<{ rev: number }[]>(['policy', 'history', 'left']).at(-1)).toMatchObject({
      rev: 2,
      action: 'set',
      source: 'inference',
      proposal: null,
    });
    const view = json<{ routes: { name: string; provider: string; model: string }[] }>([
      'inference',
      'get',
      'left',
    ]);
    expect(view.routes).toEqual([
      expect.objectContaining({ name: 'main', provider: 'two', model: 'model-two' }),
    ]);
    // The section as YAML, ready for `inference set --from`.
    const asYaml = cli(['inference', 'get', 'left', '-o', 'yaml']);
    expect({ status: asYaml.status, stderr: asYaml.stderr }).toEqual({ status: 0, stderr: '' });
    expect(parse(asYaml.stdout)).toEqual({
      inference: { routes: { main: { provider: 'two', model: 'model-two' } }, default: 'main' },
    });
    // A route that does not parse is refused, named by its place in the section (not by a line of
    // a policy revision the user never sees), and nothing changes.
    const broken = cli(['inference', 'set', 'left', '--route', 'main=two/model-two', '--default', 'nope']);
    expect(broken.status).not.toBe(0);
    expect(broken.stderr).toBe(
      'carapace: the new inference section of left: inference.default: route "nope" is not defined in inference.routes (routes: main)\n',
    );
    // A route newly naming a provider its owner does not have (a typo, most likely) is refused too.
    const typo = cli(['inference', 'set', 'left', '--route', 'main=tow/model-two']);
    expect(typo.status).not.toBe(0);
    expect(typo.stderr).toBe(
      'carapace: route main: left\'s owner has no provider named "tow" (carapace provider list; create it first: carapace provider create tow --type TYPE …)\n',
    );
    expect(json<{ policyRev: number }>(['sandbox', 'get', 'left']).policyRev).toBe(2);
    // A section without routes (every call would be refused) is refused at its line, and nothing
    // is stored.
    const empty = policyFile('inference:\n  routes: {}\n');
    const noRoutes = cli(['inference', 'set', 'left', '--from', empty]);
    expect({ status: noRoutes.status, stdout: noRoutes.stdout, stderr: noRoutes.stderr }).toEqual({
      status: 2,
      stdout: '',
      stderr:
        `carapace: ${empty}:2:11: the inference section has no routes: every model call would be refused; ` +
        'add a route (NAME: { provider: PROVIDER, model: MODEL }) or remove the inference section\n',
    });
    expect(json<{ policyRev: number }>(['sandbox', 'get', 'left']).policyRev).toBe(2);
    // Without a section there is nothing to test: said, and no success.
    expect(cli(['inference', 'set', 'left', '--clear']).status).toBe(0);
    const none = cli(['inference', 'test', 'left']);
    expect({ status: none.status, stdout: none.stdout, stderr: none.stderr }).toEqual({
      status: 2,
      stdout: '',
      stderr: 'carapace: sandbox left has no inference routes (carapace inference set left …)\n',
    });
  });

  it('refuses a sandbox over its budget, or sends it to its local route; usage survives a restart', async () => {
    const policy = policyFile(`${FS_POLICY}inference:
  routes:
    main: { provider: one, model: model-one, budget: { requests_per_hour: 2 } }
  default: main
`);
    const spill = policyFile(`${FS_POLICY}inference:
  routes:
    main: { provider: one, model: model-one }
    home: { provider: local, model: small, local: true }
  default: main
  budget: { requests_per_day: 1, on_exhausted: fallback, fallback: home }
`);
    expect(cli(['sandbox', 'create', '--name', 'thrifty', '--policy', policy, '--', ...AGENT]).status).toBe(
      0,
    );
    expect(cli(['sandbox', 'create', '--name', 'spill', '--policy', spill, '--', ...AGENT]).status).toBe(0);
    expect((await call('thrifty')).status).toBe(200);
    expect((await call('thrifty')).status).toBe(200);
    const refused = await call('thrifty');
    expect(refused.status).toBe(429);
    expect(JSON.parse(refused.body)).toMatchObject({
      error: {
        code: 'budget_exhausted',
        message: expect.stringContaining("route main's budget is used up (requests_per_hour 2)"),
      },
    });
    const localBefore = local.requests.length;
    expect((await call('spill')).status).toBe(200);
    const spilled = await call('spill');
    expect(spilled.status).toBe(200);
    expect(local.requests.length).toBe(localBefore + 1);
    expect(local.requests.at(-1)!.body).toMatchObject({ model: 'small' });

    // The gateway restarts (its sandboxes too): what was spent is still spent.
    await gw.stop();
    gw = await startTestGateway([], gw.home);
    const again = await call('thrifty');
    expect(again.status).toBe(429);
    const usage = json<{ sandbox: string; route: string; hour: { requests: number; tokensIn: number } }[]>([
      'inference',
      'usage',
      'thrifty',
    ]);
    expect(usage).toEqual([
      expect.objectContaining({
        sandbox: 'thrifty',
        route: 'main',
        hour: expect.objectContaining({ requests: 2, tokensIn: 22 }),
      }),
    ]);
    const table = cli(['inference', 'usage']);
    expect(table.stdout).toMatch(/thrifty\s+main/);
    expect(table.stdout).toMatch(/spill\s+home \(local\)/);
  });

  it('never shows a key: not in the gateway log, the audit trails, or the host’s process list', () => {
    const ps = commandLines().join('\n');
    const audits = spawnSync('sh', ['-c', `cat ${join(gw.home, 'state', 'audit')}/*.jsonl`], {
      encoding: 'utf8',
    }).stdout;
    expect(audits).toContain('"class_uid":6003');
    for (const text of [
      gw.output(),
      ps,
      audits,
      readFileSync(join(gw.home, 'state', 'gateway.db')).toString('latin1'),
    ]) {
      expect(text).not.toContain(KEY_ONE);
      expect(text).not.toContain(KEY_TWO);
    }
  });
});
