/**
 * Onboarding the `shell` blueprint (nothing to download): in a real terminal (tmux) through the
 * prompts, with the provider's key typed into a hidden prompt; without one; rerun (an approved
 * rule kept); and refused when the installed blueprint was changed on disk.
 */
import { spawnSync } from 'node:child_process';
import { appendFileSync, chmodSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { createServer } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { CLI } from '../helpers/cli.js';
import { startFake, type FakeProvider } from '../helpers/fake-providers.js';
import { holds, requires } from '../helpers/premises.js';
import { cli, filesContaining, onboardHome } from './onboard-helpers.js';

const tmux = (...args: string[]) => spawnSync('tmux', args, { encoding: 'utf8' });
const session = `cpon${process.pid}`;
const session2 = `cpon2${process.pid}`;
const screen = () => tmux('capture-pane', '-p', '-J', '-t', session).stdout;

async function shows(pattern: RegExp, timeoutMs = 120_000): Promise<string> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const text = screen();
    if (pattern.test(text)) return text;
    if (Date.now() > end) throw new Error(`the terminal never showed ${pattern}:\n${text}`);
    await sleep(100);
  }
}

/** A loopback port nothing listens on (bound, then closed): a provider that does not answer. */
async function deadPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as { port: number };
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

const homes: string[] = [];
let fake: FakeProvider;
beforeAll(async () => {
  fake = await startFake({ kind: 'openai' }); // any key: these tests do not call the model
});
afterAll(async () => {
  await fake?.close();
  tmux('kill-session', '-t', session);
  tmux('kill-session', '-t', session2);
  for (const home of homes) {
    await cli(home, ['sandbox', 'delete', 'shell']);
    await cli(home, ['sandbox', 'delete', 'box']);
    await cli(home, ['gateway', 'stop']);
  }
});

describe('onboard shell', () => {
  it.skipIf(!holds('tmux'))(
    'in a terminal: prompts, a hidden key, a running sandbox',
    async (ctx) => {
      requires(ctx, 'tmux', 'unprivileged-userns');
      const home = onboardHome();
      homes.push(home);
      const secret = `typed-secret-${process.pid}`;
      // No key variable is set: the key is asked for, hidden.
      const command =
        `env -u OPENAI_API_KEY CARAPACE_HOME=${home} TERM=xterm ${process.execPath} ${CLI} onboard ` +
        `--provider openai --provider-url ${fake.url} --model m; echo "[exit $?]"; sleep 600`;
      expect(tmux('new-session', '-d', '-s', session, '-x', '120', '-y', '40', command).status).toBe(0);
      await shows(/Which agent\?/);
      // The list: claude-code, codex, openclaw (preselected), shell.
      tmux('send-keys', '-t', session, 'Down');
      await sleep(200);
      tmux('send-keys', '-t', session, 'Enter');
      await shows(/Name of the sandbox/);
      tmux('send-keys', '-t', session, 'Enter'); // the default: the agent's name
      await shows(/API key/);
      tmux('send-keys', '-t', session, '-l', secret);
      tmux('send-keys', '-t', session, 'Enter');
      await shows(/Policy tier/);
      tmux('send-keys', '-t', session, 'Enter'); // balanced
      await shows(/Extra presets/);
      tmux('send-keys', '-t', session, 'Enter'); // none
      const done = await shows(/\[exit \d+\]/, 300_000);
      expect(done).toContain('shell is running shell 1.0.0');
      expect(done).toMatch(/\[exit 0\]/);
      expect(done).not.toContain(secret); // never echoed

      const provider = await cli(home, ['provider', 'get', 'openai', '-o', 'json']);
      const { createHash } = await import('node:crypto');
      const fingerprint = (JSON.parse(provider.stdout) as { fingerprint: string }).fingerprint; // a prefix
      expect(`sha256:${createHash('sha256').update(secret).digest('hex')}`.startsWith(fingerprint)).toBe(
        true,
      );
      expect(filesContaining(home, secret)).toEqual([]);
    },
    600_000,
  );

  it.skipIf(!holds('tmux'))(
    'in a terminal: the shell gets no model questions; Ctrl-C says "cancelled" once',
    async (ctx) => {
      requires(ctx, 'tmux', 'unprivileged-userns');
      const home = onboardHome();
      homes.push(home);
      const start = (extra: string) =>
        tmux(
          'new-session',
          '-d',
          '-s',
          session2,
          '-x',
          '120',
          '-y',
          '40',
          `env CARAPACE_HOME=${home} TERM=xterm ${process.execPath} ${CLI} onboard ${extra}; echo "[exit $?]"; sleep 600`,
        ).status;
      const screen2 = () => tmux('capture-pane', '-p', '-J', '-t', session2).stdout;
      const shows2 = async (pattern: RegExp): Promise<string> => {
        const end = Date.now() + 300_000;
        for (;;) {
          const text = screen2();
          if (pattern.test(text)) return text;
          if (Date.now() > end) throw new Error(`the terminal never showed ${pattern}:\n${text}`);
          await sleep(100);
        }
      };

      // Ctrl-C at the first question: one line says so, exit 130, nothing saved.
      expect(start('')).toBe(0);
      await shows2(/Which agent\?/);
      tmux('send-keys', '-t', session2, 'C-c');
      const cancelled = await shows2(/\[exit \d+\]/);
      tmux('kill-session', '-t', session2);
      expect(cancelled).toMatch(/\[exit 130\]/);
      expect(cancelled.match(/cancelled/g)).toHaveLength(1);
      expect(cancelled).toContain('carapace: onboarding cancelled; nothing was changed');

      // The shell talks to no model: from its name straight to the policy tier.
      expect(start('--agent shell --name plain')).toBe(0);
      await shows2(/Policy tier/);
      expect(screen2()).not.toMatch(/model servers|model calls|Which model|API key/);
      tmux('send-keys', '-t', session2, 'Enter'); // balanced
      await shows2(/Extra presets/);
      tmux('send-keys', '-t', session2, 'Enter'); // none
      const done = await shows2(/\[exit \d+\]/);
      tmux('kill-session', '-t', session2);
      expect(done).toMatch(/\[exit 0\]/);
      expect(done).toContain('plain is running shell 1.0.0');
      expect((await cli(home, ['inference', 'get', 'plain'])).stdout).not.toMatch(/openai|default/);
      expect((await cli(home, ['sandbox', 'delete', 'plain'])).status).toBe(0);
    },
    600_000,
  );

  it('an onboarding stopped by a missing key is finished by --resume with the answers it saved', async (ctx) => {
    requires(ctx, 'unprivileged-userns');
    const home = onboardHome();
    homes.push(home);
    const first = await cli(home, [
      'onboard',
      '--non-interactive',
      '--agent',
      'shell',
      '--name',
      'box',
      '--provider',
      'openai',
      '--provider-url',
      fake.url,
      '--model',
      'm',
      '--credential-env',
      'RESUME_TEST_KEY',
    ]);
    expect(first.status).toBe(2);
    expect(first.stderr).toMatch(
      /provider openai needs a key: export RESUME_TEST_KEY .* carapace onboard --resume/,
    );
    expect((await cli(home, ['sandbox', 'list'])).stdout).not.toMatch(/^box\s/m);

    const resumed = await cli(home, ['onboard', '--resume'], { RESUME_TEST_KEY: 'sk-resumed' });
    expect(resumed.status).toBe(0);
    expect(resumed.stdout).toContain('box is running shell 1.0.0');
    expect((await cli(home, ['inference', 'get', 'box'])).stdout).toMatch(/openai/);
    expect(filesContaining(home, 'sk-resumed')).toEqual([]);
  }, 600_000);

  it('without a terminal; a rerun changes nothing; a changed installed blueprint is refused', async (ctx) => {
    requires(ctx, 'unprivileged-userns');
    const home = onboardHome();
    homes.push(home);
    const first = await cli(home, ['onboard', '--non-interactive', '--agent', 'shell', '--name', 'box']);
    expect(first.stderr).toContain('sandbox box created from shell 1.0.0');
    expect(first.stdout).toContain('box is running shell 1.0.0');
    expect(
      (await cli(home, ['sandbox', 'exec', 'box', '--', 'sh', '-c', 'echo inside-$((6*7))'])).stdout,
    ).toBe('inside-42\n');

    // A preset asked for on a rerun is added through a policy update (a new revision, applied
    // live); a rerun that asks for nothing makes no revision.
    const withPreset = await cli(home, [
      'onboard',
      '--non-interactive',
      '--agent',
      'shell',
      '--name',
      'box',
      '--preset',
      'pypi',
    ]);
    expect(withPreset.stderr).toContain('policy: presets pypi added');
    const history = await cli(home, ['policy', 'history', 'box', '-o', 'json']);
    const again = await cli(home, ['onboard', '--non-interactive', '--name', 'box']);
    expect(again.status).toBe(0);
    expect(again.stderr).toContain('already running');
    expect((await cli(home, ['policy', 'history', 'box', '-o', 'json'])).stdout).toBe(history.stdout);
    expect((await cli(home, ['policy', 'get', 'box'])).stdout).toContain('pypi');
    // Nothing named, no terminal (install.sh run again): the last onboarding, not the default agent.
    const rerun = await cli(home, ['onboard', '--non-interactive']);
    expect(rerun.status).toBe(0);
    expect(rerun.stderr).toContain('already running');
    expect(rerun.stdout).toContain('box is running shell 1.0.0');
    expect((await cli(home, ['sandbox', 'list'])).stdout).not.toMatch(/^openclaw\s/m);
    expect((await cli(home, ['policy', 'history', 'box', '-o', 'json'])).stdout).toBe(history.stdout);

    // The installed copy changed on disk (by someone who can write the state directory).
    const stored = join(home, 'state', 'blueprints');
    const [dir] = readdirSync(stored).filter((n) => n.startsWith('sha256-'));
    chmodSync(join(stored, dir!), 0o755);
    chmodSync(join(stored, dir!, 'policy.yaml'), 0o644);
    appendFileSync(join(stored, dir!, 'policy.yaml'), '# changed\n');
    const refused = await cli(home, ['onboard', '--non-interactive', '--agent', 'shell', '--name', 'other']);
    expect(refused.status).toBe(1);
    expect(refused.stderr.trim().split('\n').at(-1)).toMatch(
      /do not match the recorded digest .* refusing it/,
    );
    expect((await cli(home, ['sandbox', 'list'])).stdout).not.toContain('other');
  }, 600_000);

  it('--tier on a rerun applies the tier live (no restart), keeps presets asked for by name, and a tier it has changes nothing', async (ctx) => {
    requires(ctx, 'unprivileged-userns');
    const home = onboardHome();
    homes.push(home);
    const onboard = (...extra: string[]) =>
      cli(home, ['onboard', '--non-interactive', '--agent', 'shell', '--name', 'box', ...extra]);
    expect((await onboard('--preset', 'pypi')).status).toBe(0);
    // /tmp is the sandbox's own tmpfs: a restart would lose this file.
    await cli(home, ['sandbox', 'exec', 'box', '--', 'sh', '-c', 'echo kept > /tmp/marker']);
    const policy = async () => (await cli(home, ['policy', 'get', 'box'])).stdout;
    const revisions = async () =>
      (JSON.parse((await cli(home, ['policy', 'history', 'box', '-o', 'json'])).stdout) as unknown[]).length;

    const open = await onboard('--tier', 'open');
    expect(open.status).toBe(0);
    expect(open.stderr).toMatch(
      /policy tier: box is now open \(\+npm_yarn \+huggingface; revision 2, applied live, no restart\)/,
    );
    expect(await policy()).toMatch(/registry\.npmjs\.org[\s\S]*huggingface\.co/);
    expect((await cli(home, ['sandbox', 'exec', 'box', '--', 'cat', '/tmp/marker'])).stdout).toBe('kept\n');

    const again = await onboard('--tier', 'open');
    expect(again.stderr).toContain('policy tier: box is already open');
    expect(await revisions()).toBe(2);

    const restricted = await onboard('--tier', 'restricted');
    expect(restricted.status).toBe(0);
    expect(restricted.stderr).toMatch(
      /policy tier: box is now restricted \(-npm_yarn -huggingface; revision 3/,
    );
    const text = await policy();
    expect(text).not.toMatch(/registry\.npmjs\.org|huggingface\.co/);
    expect(text).toContain('pypi.org'); // asked for by name: not the tier's to take away
    expect((await cli(home, ['sandbox', 'exec', 'box', '--', 'cat', '/tmp/marker'])).stdout).toBe('kept\n');
    // The answers saved are the tier the sandbox has: a bare rerun keeps it.
    const bare = await cli(home, ['onboard', '--non-interactive', '--name', 'box']);
    expect(bare.stderr).not.toContain('policy tier');
    expect(await revisions()).toBe(3);
  }, 600_000);

  it('an approved rule survives a rerun, a preset added and a tier changed either way', async (ctx) => {
    requires(ctx, 'unprivileged-userns');
    const home = onboardHome();
    homes.push(home);
    const onboard = (...extra: string[]) =>
      cli(home, ['onboard', '--non-interactive', '--agent', 'shell', '--name', 'box', ...extra]);
    expect((await onboard()).status).toBe(0);
    // The agent is refused a host its policy does not list: a proposal, which the operator approves.
    const host = 'approved.example.com';
    const refused = await cli(home, [
      'sandbox',
      'exec',
      'box',
      '--',
      'curl',
      '-sS',
      '-m',
      '10',
      `https://${host}/`,
    ]);
    expect(refused.status).not.toBe(0);
    type Listed = { id: number; host: string; status: string };
    let proposal: Listed | undefined;
    for (let i = 0; i < 200 && proposal === undefined; i++) {
      const listed = JSON.parse((await cli(home, ['rules', 'list', 'box', '-o', 'json'])).stdout) as Listed[];
      proposal = listed.find((p) => p.host === host);
      if (proposal === undefined) await sleep(25);
    }
    expect(proposal).toMatchObject({ host, status: 'pending' });
    expect((await cli(home, ['rules', 'approve', String(proposal!.id)])).status).toBe(0);
    const policy = async () => (await cli(home, ['policy', 'get', 'box'])).stdout;
    /** The hosts of the policy's network entries (not merely its text: a comment could name one). */
    const hosts = async () =>
      Object.values(
        (parse(await policy()) as { network_policies: Record<string, { endpoints: { host: string }[] }> })
          .network_policies,
      ).flatMap((e) => e.endpoints.map((ep) => ep.host));
    expect(await hosts()).toContain(host);

    for (const extra of [[], ['--preset', 'pypi'], ['--tier', 'restricted'], ['--tier', 'open'], []]) {
      const r = await onboard(...extra);
      expect(r.status, `onboard ${extra.join(' ')}: ${r.stderr}`).toBe(0);
      expect(await hosts(), `after onboard ${extra.join(' ')}`).toContain(host);
    }
    expect(await hosts()).toContain('pypi.org');
  }, 600_000);

  it('a provider that does not answer, an unknown preset or agent: one line, exit 1, 2 or 3, nothing made or changed', async (ctx) => {
    requires(ctx, 'unprivileged-userns');
    const home = onboardHome();
    homes.push(home);
    const dead = `http://127.0.0.1:${await deadPort()}/v1`;
    const base = ['onboard', '--non-interactive', '--agent', 'shell', '--model', 'm'];
    const env = { DEAD_TEST_KEY: 'sk-dead-test' };
    const refused = await cli(
      home,
      [
        ...base,
        '--name',
        'box',
        '--provider',
        'openai',
        '--provider-url',
        dead,
        '--credential-env',
        'DEAD_TEST_KEY',
      ],
      env,
    );
    expect(refused.status).toBe(1);
    const last = refused.stderr.trim().split('\n').at(-1)!;
    expect(last).toContain(`provider openai at ${dead} does not answer`);
    expect(last).toContain('--provider-url');
    expect((await cli(home, ['provider', 'list', '-o', 'json'])).stdout).not.toContain('openai');
    expect((await cli(home, ['sandbox', 'list'])).stdout).not.toMatch(/^box\s/m);

    // A provider that exists keeps its URL when a rerun for another sandbox names a dead one.
    const made = await cli(
      home,
      [
        ...base,
        '--name',
        'box',
        '--provider',
        'openai',
        '--provider-url',
        fake.url,
        '--credential-env',
        'DEAD_TEST_KEY',
      ],
      env,
    );
    expect(made.status).toBe(0);
    const again = await cli(
      home,
      [
        ...base,
        '--name',
        'two',
        '--provider',
        'openai',
        '--provider-url',
        dead,
        '--credential-env',
        'DEAD_TEST_KEY',
      ],
      env,
    );
    expect(again.status).toBe(1);
    expect(again.stderr).toContain('does not answer');
    expect((await cli(home, ['provider', 'get', 'openai', '-o', 'json'])).stdout).toContain(fake.url);
    expect((await cli(home, ['sandbox', 'list'])).stdout).not.toMatch(/^two\s/m);

    // A preset name that does not exist is refused before anything is saved: a later bare rerun
    // (install.sh again) or --resume does not pick up the mistyped onboarding.
    const typo = await cli(home, [
      'onboard',
      '--non-interactive',
      '--agent',
      'shell',
      '--name',
      'typo',
      '--preset',
      'no-such-preset',
    ]);
    expect(typo.status).toBe(2);
    expect(typo.stderr.trim().split('\n')).toHaveLength(1);
    expect(typo.stderr).toContain('no-such-preset');
    expect(readdirSync(join(home, 'state', 'onboard'))).not.toContain('typo.json');
    expect((await cli(home, ['sandbox', 'list'])).stdout).not.toMatch(/^typo\s/m);

    // A blueprint that is not there: its one line first (no preflight before it), exit 3.
    const nope = await cli(home, [
      'onboard',
      '--non-interactive',
      '--agent',
      'no-such-agent',
      '--name',
      'nope',
    ]);
    expect(nope.status).toBe(3);
    expect(nope.stderr).toMatch(/^carapace: no blueprint "no-such-agent": built-in ones are [^\n]*\n$/);
    expect(readdirSync(join(home, 'state', 'onboard'))).not.toContain('nope.json');
  }, 600_000);

  it('blueprint remove refuses a blueprint a sandbox was made from, and changes nothing', async (ctx) => {
    requires(ctx, 'unprivileged-userns');
    const home = onboardHome();
    homes.push(home);
    const made = await cli(home, ['onboard', '--non-interactive', '--agent', 'shell', '--name', 'box']);
    expect(made.status).toBe(0);
    const before = readdirSync(join(home, 'state', 'blueprints'));
    const refused = await cli(home, ['blueprint', 'remove', 'shell']);
    expect(refused.status).toBe(1);
    expect(refused.stderr.trim().split('\n')).toHaveLength(1);
    expect(refused.stderr).toMatch(/shell .* is in use by sandbox box; carapace sandbox delete box first/);
    expect(readdirSync(join(home, 'state', 'blueprints'))).toEqual(before);
    expect(
      (await cli(home, ['sandbox', 'exec', 'box', '--', 'sh', '-c', 'echo still-$((6*7))'])).stdout,
    ).toBe('still-42\n');

    expect((await cli(home, ['sandbox', 'delete', 'box'])).status).toBe(0);
    const removed = await cli(home, ['blueprint', 'remove', 'shell']);
    expect(removed.status).toBe(0);
    expect(readdirSync(join(home, 'state', 'blueprints')).filter((n) => n.startsWith('sha256-'))).toEqual([]);
  }, 600_000);
});
