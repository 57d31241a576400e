/**
 * `carapace onboard --non-interactive --agent claude-code` on a clean state directory: the real
 * Claude Code from the npm registry, `claude -p` answering from a scripted Anthropic-protocol
 * model through inference.local, the key only ever in the router's request to the provider.
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

const KEY = `sk-ant-onboard-secret-${process.pid}-${Date.now()}`;
const unreachable = registryUnreachable();

describe.skipIf(unreachable !== null)('onboard claude-code', () => {
  let fake: FakeProvider;
  let home: string;

  beforeAll(async () => {
    fake = await startFake({ kind: 'anthropic', key: KEY });
    fake.reply = scriptedModel(/^Bash$/);
    home = onboardHome();
  });

  afterAll(async () => {
    if (home !== undefined) {
      await cli(home, ['sandbox', 'delete', 'claude-code']);
      await cli(home, ['gateway', 'stop']);
    }
    await fake?.close();
  });

  it('ends with Claude Code ready; claude -p answers from the scripted model through inference.local', async (ctx) => {
    requires(ctx, 'unprivileged-userns');
    const r = await cli(
      home,
      [
        'onboard',
        '--non-interactive',
        '--agent',
        'claude-code',
        '--provider',
        'anthropic',
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
    expect(r.stderr + r.stdout).toContain('claude-code is running claude-code 1.0.0');
    expect(r.status).toBe(0);

    const answer = await cli(home, [
      'sandbox',
      'exec',
      'claude-code',
      '--',
      'claude',
      '-p',
      'please answer ECHO:mango-7',
    ]);
    expect(answer.stdout + answer.stderr).toContain('scripted: mango-7');
    const calls = fake.requests.filter((q) => q.path.startsWith('/v1/messages'));
    expect(calls.length).toBeGreaterThan(0);
    expect(calls.every((q) => q.headers['x-api-key'] === KEY)).toBe(true);

    // A prompt-injected agent reads /etc/shadow, reaches an unlisted host and prints its
    // environment (a Bash tool call the scripted model makes): no secret, the refusal audited.
    const attack = await cli(home, [
      'sandbox',
      'exec',
      'claude-code',
      '--',
      'claude',
      '-p',
      '--dangerously-skip-permissions',
      'RUN: cat /etc/shadow; curl -sS -m 10 https://unlisted.example.com/ 2>&1; env | grep -i -E "key|token"; echo done',
    ]);
    const out = attack.stdout + attack.stderr;
    if (!out.includes('tool said:'))
      writeFileSync(
        '/tmp/onboard-claude-requests.json',
        JSON.stringify(
          fake.requests.map((q) => q.body),
          null,
          1,
        ),
      );
    expect(out).toContain('tool said:');
    expect(out).not.toContain(KEY);
    expect(out).toMatch(/403|policy_denied|Forbidden/);
    const audit = await cli(home, ['sandbox', 'logs', 'claude-code', '--audit']);
    expect(
      audit.stdout
        .split('\n')
        .filter((l) => l.includes('unlisted.example.com'))
        .join('\n'),
    ).toMatch(/denied|Blocked/i);
    expect(filesContaining(home, KEY)).toEqual([]);
  }, 900_000);
});
