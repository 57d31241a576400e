/**
 * What an agent's SDK makes of what the router refuses. The official `openai` and
 * `@anthropic-ai/sdk` clients retry a 5xx (and 408, 409, 429) on their own, twice by default, and
 * obey the non-standard `x-should-retry` before anything else. A refusal by the policy cannot turn
 * into an answer a second later, so the router says `x-should-retry: false` on it: without it, a
 * sandbox with no inference section (a 403, which they would not retry anyway) or a call a privacy rule keeps on a local route that is
 * down (503) cost three requests and seconds of backoff before the agent saw why.
 *
 * And an agent that probes for models (`GET /v1/models`, as agents do at start) in a sandbox with no
 * inference section gets an empty list in its API's shape, not an error; its model calls are refused.
 *
 * A real router behind a real proxy, called by plain HTTP and by the SDKs (their fetch carried to
 * the proxy's socket).
 */
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FakeProvider, startFake } from '../helpers/fake-providers.js';
import { policy, sdkFetch, startRouterRig, type RouterRig } from './harness.js';

const CARD = '4111 1111 1111 1111';
const DOWN = 'http://127.0.0.1:9/v1';
let fake: FakeProvider;

beforeAll(async () => {
  fake = await startFake({ kind: 'openai' });
});
afterAll(async () => {
  await fake.close();
});

async function withRig(yaml: string, test: (r: RouterRig) => Promise<void>): Promise<void> {
  const r = await startRouterRig(yaml);
  try {
    await test(r);
  } finally {
    await r.close();
  }
}

const chat = (content: string, model = 'anything') => ({
  model,
  messages: [{ role: 'user' as const, content }],
});

/** One refused call by each SDK: the error it throws and how many requests it sent. */
async function bySdks(
  r: RouterRig,
  content: string,
  model = 'anything',
): Promise<{ openai: { err: unknown; requests: number }; anthropic: { err: unknown; requests: number } }> {
  const o = sdkFetch(r);
  const openai = new OpenAI({ baseURL: 'http://inference.local/v1', apiKey: 'dummy', fetch: o.fetch });
  const openaiErr = await openai.chat.completions.create(chat(content, model)).catch((e: unknown) => e);
  const a = sdkFetch(r);
  const anthropic = new Anthropic({ baseURL: 'http://inference.local', apiKey: 'dummy', fetch: a.fetch });
  const anthropicErr = await anthropic.messages
    .create({ model, max_tokens: 10, messages: [{ role: 'user', content }] })
    .catch((e: unknown) => e);
  return {
    openai: { err: openaiErr, requests: o.requests },
    anthropic: { err: anthropicErr, requests: a.requests },
  };
}

describe('a sandbox whose policy has no inference section', () => {
  it('lists no models, in the OpenAI and the Anthropic shape, and audits the listing', async () => {
    await withRig('version: 1\n', async (r) => {
      const openai = await r.call('/v1/models');
      expect({ status: openai.status, body: openai.json() }).toEqual({
        status: 200,
        body: { object: 'list', data: [] },
      });
      const anthropic = await r.call('/v1/models', undefined, { 'anthropic-version': '2023-06-01' });
      expect({ status: anthropic.status, body: anthropic.json() }).toEqual({
        status: 200,
        body: { data: [], has_more: false, first_id: null, last_id: null },
      });
      expect(r.inferenceEvents().map((e) => [e.disposition, e.unmapped.inference])).toEqual([
        ['Allowed', expect.objectContaining({ api: 'models' })],
        ['Allowed', expect.objectContaining({ api: 'models' })],
      ]);

      // The SDKs read the empty list.
      const o = sdkFetch(r);
      const models = await new OpenAI({
        baseURL: 'http://inference.local/v1',
        apiKey: 'x',
        fetch: o.fetch,
      }).models.list();
      expect(models.data).toEqual([]);
      const a = sdkFetch(r);
      const list = await new Anthropic({
        baseURL: 'http://inference.local',
        apiKey: 'x',
        fetch: a.fetch,
      }).models.list();
      expect(list.data).toEqual([]);
    });
  });

  it('refuses model calls once, and the SDKs do not retry the refusal', async () => {
    await withRig('version: 1\n', async (r) => {
      const res = await r.call('/v1/chat/completions', chat('hi'));
      expect({ status: res.status, shouldRetry: res.headers['x-should-retry'] }).toEqual({
        status: 403,
        shouldRetry: 'false',
      });
      expect(res.json()).toMatchObject({
        error: {
          message: expect.stringContaining('no inference section'),
          type: 'permission_error',
          code: 'inference_not_allowed',
        },
      });
      const sdks = await bySdks(r, 'hi');
      expect(sdks.openai.err).toBeInstanceOf(OpenAI.PermissionDeniedError);
      expect(sdks.anthropic.err).toBeInstanceOf(Anthropic.PermissionDeniedError);
      expect(sdks.anthropic.err).toMatchObject({ error: { error: { type: 'permission_error' } } });
      expect([sdks.openai.requests, sdks.anthropic.requests]).toEqual([1, 1]);
      expect(r.inferenceEvents().every((e) => e.disposition === 'Blocked')).toBe(true);
    });
  });
});

describe('x-should-retry: false on what the policy refuses', () => {
  it('a call a privacy rule keeps on a local route that is down (503): one request per SDK', async () => {
    await withRig(
      policy(`  routes:
    cloud: { provider: openai-compatible, endpoint: "${fake.url}", model: big }
    local: { provider: vllm, endpoint: "${DOWN}", model: small, local: true, on_unavailable: fallback, fallback: cloud }
  default: cloud
  privacy:
    - { name: cards, detect: [payment_card], route: local }`),
      async (r) => {
        const before = fake.requests.length;
        const res = await r.call('/v1/chat/completions', chat(`card ${CARD}`));
        expect({ status: res.status, shouldRetry: res.headers['x-should-retry'] }).toEqual({
          status: 503,
          shouldRetry: 'false',
        });
        const sdks = await bySdks(r, `card ${CARD}`);
        expect(sdks.openai.err).toMatchObject({ status: 503, code: 'route_unavailable' });
        expect(sdks.anthropic.err).toMatchObject({ status: 503 });
        expect([sdks.openai.requests, sdks.anthropic.requests]).toEqual([1, 1]);
        expect(fake.requests.length).toBe(before);
      },
    );
  });

  it('a privacy rule that denies (403) and a model that selects no route (400)', async () => {
    await withRig(
      policy(`  routes:
    a: { provider: openai-compatible, endpoint: "${fake.url}", model: m1 }
    b: { provider: openai-compatible, endpoint: "${fake.url}", model: m2 }
  privacy:
    - { name: cards, detect: [payment_card], action: deny }`),
      async (r) => {
        const denied = await r.call('/v1/chat/completions', chat(`card ${CARD}`, 'a'));
        expect({ status: denied.status, shouldRetry: denied.headers['x-should-retry'] }).toEqual({
          status: 403,
          shouldRetry: 'false',
        });
        const noRoute = await r.call('/v1/messages', { ...chat('hi', 'nope'), max_tokens: 5 });
        expect({ status: noRoute.status, shouldRetry: noRoute.headers['x-should-retry'] }).toEqual({
          status: 400,
          shouldRetry: 'false',
        });
        expect(noRoute.json()).toMatchObject({
          type: 'error',
          error: { type: 'invalid_request_error', message: expect.stringContaining('selects no route') },
        });
      },
    );
  });

  it('not on a provider that is down: the SDKs retry an outage as they would the provider’s own 503', async () => {
    await withRig(
      policy(`  routes:
    cloud: { provider: openai-compatible, endpoint: "${DOWN}", model: big }`),
      async (r) => {
        const res = await r.call('/v1/chat/completions', chat('hi'));
        expect({ status: res.status, shouldRetry: res.headers['x-should-retry'] }).toEqual({
          status: 503,
          shouldRetry: undefined,
        });
      },
    );
  });
});
