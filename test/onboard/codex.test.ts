/**
 * `carapace onboard --non-interactive --agent codex` on a clean state directory: the real Codex
 * CLI from the npm registry, `codex exec` answering from a scripted model (OpenAI's Responses
 * protocol) through inference.local, with Codex's own sandbox off and Carapace's in force; then the
 * attacks as a tool call it is made to run.
 */
import { writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFake, type FakeProvider } from '../helpers/fake-providers.js';
import { requires } from '../helpers/premises.js';
import {
  cli,
  filesContaining,
  onboardHome,
  registryUnreachable,
  scriptedModel,
  UPSTREAM_CA,
} from './onboard-helpers.js';

const KEY = `sk-codex-onboard-secret-${process.pid}-${Date.now()}`;
const unreachable = registryUnreachable();

describe.skipIf(unreachable !== null)('onboard codex', () => {
  let fake: FakeProvider;
  let home: string;

  beforeAll(async () => {
    fake = await startFake({ kind: 'openai', key: KEY, responses: true });
    fake.reply = scriptedModel(/^(shell|exec_command|local_shell)$/);
    home = onboardHome();
  });

  afterAll(async () => {
    if (home !== undefined) {
      await cli(home, ['sandbox', 'delete', 'codex']);
      await cli(home, ['gateway', 'stop']);
    }
    await fake?.close();
  });

  it('ends with Codex ready; codex exec answers from the scripted model through inference.local', async (ctx) => {
    requires(ctx, 'unprivileged-userns');
    const r = await cli(
      home,
      [
        'onboard',
        '--non-interactive',
        '--agent',
        'codex',
        '--provider',
        'openai',
        '--provider-url',
        fake.url,
        '--model',
        'scripted',
        '--credential-env',
        'ONBOARD_TEST_KEY',
        ...UPSTREAM_CA,
      ],
      { ONBOARD_TEST_KEY: KEY },
    );
    expect(r.stderr + r.stdout).toContain('codex is running codex 1.0.0');
    expect(r.status).toBe(0);

    const answer = await cli(home, [
      'sandbox',
      'exec',
      'codex',
      '--',
      'codex',
      'exec',
      '--skip-git-repo-check',
      'please answer ECHO:kiwi-3',
    ]);
    expect(answer.stdout + answer.stderr).toContain('scripted: kiwi-3');
    const calls = fake.requests.filter((q) => q.path.endsWith('/responses'));
    expect(calls.length).toBeGreaterThan(0);
    expect(calls.every((q) => q.headers.authorization === `Bearer ${KEY}`)).toBe(true);
    const attack = await cli(home, [
      'sandbox',
      'exec',
      'codex',
      '--',
      'codex',
      'exec',
      '--skip-git-repo-check',
      'RUN: cat /etc/shadow; curl -sS -m 10 https://unlisted.example.com/ 2>&1; env | grep -i -E "key|token"; echo done',
    ]);
    const out = attack.stdout + attack.stderr;
    if (!out.includes('tool said:'))
      writeFileSync(
        '/tmp/onboard-codex-requests.json',
        JSON.stringify({ out, requests: fake.requests.map((q) => q.body) }, null, 1),
      );
    expect(out).toContain('tool said:');
    expect(out).not.toContain(KEY);
    const audit = await cli(home, ['sandbox', 'logs', 'codex', '--audit']);
    expect(
      audit.stdout
        .split('\n')
        .filter((l) => l.includes('unlisted.example.com'))
        .join('\n'),
    ).toMatch(/denied|Blocked/i);
    expect(filesContaining(home, KEY)).toEqual([]);
  }, 900_000);
});
