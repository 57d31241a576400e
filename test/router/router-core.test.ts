/**
 * The router's core through a real proxy: inference.local served to a sandbox with no network
 * grant, the agent's credentials stripped and the provider's key injected, the model rewritten,
 * only allowed headers passed, streams relayed, one 6003 event per call with numbers and names only.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FakeProvider, startFake } from '../helpers/fake-providers.js';
import { chatStreamText, policy, startRouterRig, type RouterRig } from './harness.js';

const KEY = 'sk-real-provider-key-0123456789abcdef';
let fake: FakeProvider;
let r: RouterRig;

beforeAll(async () => {
  fake = await startFake({ kind: 'openai', key: KEY });
  r = await startRouterRig(
    policy(`  routes:
    cloud: { provider: openai-compatible, endpoint: "${fake.url}", model: real-model, credential_env: OPENAI_API_KEY, aliases: [gpt-4o] }
  default: cloud`),
    { credentials: { OPENAI_API_KEY: KEY } },
  );
});
afterAll(async () => {
  await r.close();
  await fake.close();
});

describe('inference.local through the proxy', () => {
  it('answers a chat completion with the real key upstream and the dummy key never', async () => {
    const before = fake.requests.length;
    const res = await r.call(
      '/v1/chat/completions',
      { model: 'gpt-4o', messages: [{ role: 'user', content: 'hello' }] },
      {
        authorization: 'Bearer dummy-agent-key',
        'x-api-key': 'dummy-agent-key',
        'openai-organization': 'org-agent',
        'x-stainless-os': 'Linux',
        cookie: 'a=b',
      },
    );
    expect(res.status).toBe(200);
    expect(res.json()).toMatchObject({ choices: [{ message: { content: 'You said: hello' } }] });
    const seen = fake.requests.slice(before);
    expect(seen).toHaveLength(1);
    const got = seen[0]!;
    expect(got.headers.authorization).toBe(`Bearer ${KEY}`);
    expect(got.raw).not.toContain('dummy-agent-key');
    expect(JSON.stringify(got.headers)).not.toContain('dummy-agent-key');
    expect(got.headers['x-api-key']).toBeUndefined();
    expect(got.headers['openai-organization']).toBeUndefined();
    expect(got.headers['x-stainless-os']).toBeUndefined();
    expect(got.headers.cookie).toBeUndefined();
    expect(got.body).toMatchObject({ model: 'real-model' });
  });

  it('streams a chat completion and records usage it asked for without showing it to the agent', async () => {
    const before = fake.requests.length;
    const res = await r.call('/v1/chat/completions', {
      model: 'cloud',
      stream: true,
      messages: [{ role: 'user', content: 'stream me' }],
    });
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toMatch(/^text\/event-stream/);
    const events = res.events();
    expect(chatStreamText(events)).toBe('You said: stream me');
    expect(events.at(-1)?.data).toBe('[DONE]');
    // The router asked for usage; the agent did not, so it does not get the usage chunk.
    expect(fake.requests.at(-1)!.body).toMatchObject({ stream_options: { include_usage: true } });
    expect(events.some((e) => (e.data as { usage?: unknown })?.usage)).toBe(false);
    expect(fake.requests.length).toBe(before + 1);
    const ev = r.inferenceEvents().at(-1)!;
    expect(ev.unmapped.inference).toMatchObject({
      api: 'chat.completions',
      route: 'cloud',
      selected_by: 'route name',
      requested_model: 'cloud',
      model: 'real-model',
      stream: true,
      tokens_in: 11,
      tokens_out: 7,
    });
    expect(typeof (ev.unmapped.inference as { ttft_ms: unknown }).ttft_ms).toBe('number');
    expect(JSON.stringify(ev)).not.toContain(KEY);
    expect(JSON.stringify(ev)).not.toContain('stream me');
  });

  it('lists the routes and aliases as models', async () => {
    const res = await r.call('/v1/models');
    expect(res.json()).toMatchObject({ object: 'list', data: [{ id: 'cloud' }, { id: 'gpt-4o' }] });
  });

  it('answers unknown paths with 404 in the OpenAI shape', async () => {
    const res = await r.call('/v1/nope', {});
    expect(res.status).toBe(404);
    expect(res.json()).toMatchObject({ error: { code: 'not_found' } });
  });

  it('scrubs the key from a provider error that echoes it', async () => {
    fake.failWith = null;
    const wrong = await startRouterRig(
      policy(`  routes:
    cloud: { provider: openai-compatible, endpoint: "${fake.url}", model: m, credential_env: K }`),
      { credentials: { K: 'sk-wrong-key-but-secret-0123456789' } },
    );
    try {
      const res = await wrong.call('/v1/chat/completions', {
        model: 'x',
        messages: [{ role: 'user', content: 'hi' }],
      });
      expect(res.status).toBe(401);
      expect(res.text).not.toContain('sk-wrong-key-but-secret-0123456789');
      expect(res.text).toContain('[redacted by carapace]');
    } finally {
      await wrong.close();
    }
  });
});
