/**
 * A spent budget's 429, as the agent's SDK reads it. The official `openai` and `@anthropic-ai/sdk`
 * clients retry a 429 on their own (twice by default): without a word on when the budget frees,
 * they spent their retries at once on calls that could only be refused again. The router says when
 * it frees: `retry-after` within a minute (the SDK waits and the call goes through), and past that
 * `retry-after` with `x-should-retry: false` (the SDK gives the agent the error to show; Anthropic's
 * would otherwise sleep until the next day). A limit of 0 never frees: no `retry-after`, no retry.
 *
 * A real router behind a real proxy, called by plain HTTP and by the SDKs (their fetch carried to
 * the proxy's socket); the router's clock is the test's, so windows turn over when the test says.
 */
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { OcsfEvent } from '../../src/audit/index.js';
import { FakeProvider, startFake } from '../helpers/fake-providers.js';
import { policy, sdkFetch, startRouterRig, type RouterRig } from './harness.js';

const KEY = 'sk-budget-provider-key-0123456789abcdef';
let fake: FakeProvider;
let rig: RouterRig | undefined;
/** The router's clock (ms since the epoch). */
let clock = 0;
const at = (hhmmss: string): number => Date.parse(`2026-12-01T${hhmmss}Z`);

beforeAll(async () => {
  fake = await startFake({ kind: 'openai', key: KEY });
});
afterEach(async () => {
  await rig?.close();
  rig = undefined;
});
afterAll(async () => {
  await fake.close();
});

async function start(routes: string): Promise<RouterRig> {
  rig = await startRouterRig(
    policy(`  routes:
${routes}
  default: cloud`),
    { credentials: { KEY }, now: () => clock },
  );
  return rig;
}
const cloud = (budget: string) =>
  `    cloud: { provider: openai-compatible, endpoint: "${fake.url}", model: m, credential_env: KEY, budget: ${budget} }`;
const chat = { model: 'cloud', messages: [{ role: 'user' as const, content: 'hi' }] };
const statusOf = (e: OcsfEvent): unknown => (e.http_response as { code?: number } | undefined)?.code;

/**
 * The SDKs' fetch through the proxy's socket (harness.ts); the router's clock moves on by the real
 * time between two requests (an SDK's wait included).
 */
function viaProxy(r: RouterRig): ReturnType<typeof sdkFetch> {
  let last = 0;
  let first = true;
  return sdkFetch(r, () => {
    const now = Date.now();
    if (!first) clock += now - last;
    first = false;
    last = now;
  });
}

describe('a spent budget’s 429', () => {
  it('says when it frees; within a minute an SDK waits that long and gets through', async () => {
    const r = await start(cloud('{ requests_per_hour: 1 }'));
    clock = at('10:59:59.500');
    expect((await r.call('/v1/chat/completions', chat)).status).toBe(200);
    const refused = await r.call('/v1/chat/completions', chat);
    const message =
      "carapace router: route cloud's budget is used up (requests_per_hour 1); it frees in 1s, at 11:00 UTC";
    expect({
      status: refused.status,
      retryAfter: refused.headers['retry-after'],
      shouldRetry: refused.headers['x-should-retry'],
      body: refused.json(),
    }).toEqual({
      status: 429,
      retryAfter: '1',
      shouldRetry: undefined,
      body: { error: { message, type: 'rate_limit_error', code: 'budget_exhausted', param: null } },
    });
    expect(r.inferenceEvents().at(-1)).toMatchObject({
      class_uid: 6003,
      disposition: 'Blocked',
      http_response: { code: 429 },
      unmapped: { reason: message.slice('carapace router: '.length), inference: { route: 'cloud' } },
    });

    // The SDK waits the second it was told, and its retry lands in the next hour.
    const via = viaProxy(r);
    const sdk = new OpenAI({ baseURL: 'http://inference.local/v1', apiKey: 'dummy', fetch: via.fetch });
    const done = await sdk.chat.completions.create({
      model: 'cloud',
      messages: [{ role: 'user', content: 'again' }],
    });
    expect(done.choices[0]?.message.content).toBe('You said: again');
    expect(via.requests).toBe(2);
    expect(
      r
        .inferenceEvents()
        .slice(-2)
        .map((e) => statusOf(e)),
    ).toEqual([429, 200]);
  });

  it('past a minute, tells the SDKs not to retry: one request, and the agent sees why', async () => {
    const r = await start(cloud('{ requests_per_hour: 1 }'));
    clock = at('10:20:00');
    expect((await r.call('/v1/chat/completions', chat)).status).toBe(200);
    const refused = await r.call('/v1/chat/completions', chat);
    expect(refused.status).toBe(429);
    expect(refused.headers['retry-after']).toBe('2400');
    expect(refused.headers['x-should-retry']).toBe('false');
    const why = "route cloud's budget is used up (requests_per_hour 1); it frees in 40m, at 11:00 UTC";
    expect(r.inferenceEvents().at(-1)).toMatchObject({
      disposition: 'Blocked',
      http_response: { code: 429 },
      unmapped: { reason: why },
    });

    const openaiVia = viaProxy(r);
    const openai = new OpenAI({ baseURL: 'http://inference.local/v1', apiKey: 'x', fetch: openaiVia.fetch });
    const openaiErr: unknown = await openai.chat.completions.create(chat).catch((e: unknown) => e);
    expect(openaiErr).toBeInstanceOf(OpenAI.RateLimitError);
    expect(openaiErr).toMatchObject({ status: 429, code: 'budget_exhausted' });
    expect((openaiErr as Error).message).toContain(why);
    expect(openaiVia.requests).toBe(1);

    const anthropicVia = viaProxy(r);
    const anthropic = new Anthropic({
      baseURL: 'http://inference.local',
      apiKey: 'x',
      fetch: anthropicVia.fetch,
    });
    const anthropicErr: unknown = await anthropic.messages
      .create({ model: 'cloud', max_tokens: 10, messages: [{ role: 'user', content: 'hi' }] })
      .catch((e: unknown) => e);
    expect(anthropicErr).toBeInstanceOf(Anthropic.RateLimitError);
    expect(anthropicErr).toMatchObject({
      status: 429,
      error: { type: 'error', error: { type: 'rate_limit_error', message: `carapace router: ${why}` } },
    });
    expect(anthropicVia.requests).toBe(1);
    expect(r.inferenceEvents().filter((e) => statusOf(e) === 429)).toHaveLength(3);
  });

  it('frees when every spent limit has, or when the first of a route and its fallback does', async () => {
    const r = await start(
      `${cloud('{ requests_per_hour: 1, requests_per_day: 1, on_exhausted: fallback, fallback: home }')}
    home: { provider: openai-compatible, endpoint: "${fake.url}", model: small, credential_env: KEY, local: true, budget: { requests_per_hour: 1 } }`,
    );
    clock = at('22:30:00');
    expect((await r.call('/v1/chat/completions', chat)).status).toBe(200); // cloud
    expect((await r.call('/v1/chat/completions', chat)).status).toBe(200); // home
    // cloud frees at midnight (its day), home at 23:00: the call goes through again at 23:00.
    const both = await r.call('/v1/chat/completions', chat);
    expect(both.status).toBe(429);
    expect(both.headers['retry-after']).toBe('1800');
    expect(both.json<{ error: { message: string } }>().error.message).toBe(
      "carapace router: route cloud's budget is used up (requests_per_hour 1), and so is its fallback home's " +
        '(requests_per_hour 1); it frees in 30m, at 23:00 UTC',
    );
    // At 23:00 home takes it; then cloud is still spent for the day and home for the hour.
    clock = at('23:00:00');
    expect((await r.call('/v1/chat/completions', chat)).status).toBe(200);
    const day = await r.call('/v1/chat/completions', chat);
    expect(day.headers['retry-after']).toBe('3600');
  });

  it('a limit of 0 never frees: no retry-after, and no retry', async () => {
    const r = await start(cloud('{ tokens_per_day: 0 }'));
    clock = at('10:20:00');
    const sent = fake.requests.length;
    const refused = await r.call('/v1/messages', {
      model: 'cloud',
      max_tokens: 10,
      messages: [{ role: 'user', content: 'hi' }],
    });
    expect(refused.status).toBe(429);
    expect(refused.headers['retry-after']).toBeUndefined();
    expect(refused.headers['x-should-retry']).toBe('false');
    expect(refused.json()).toEqual({
      type: 'error',
      error: {
        type: 'rate_limit_error',
        message:
          "carapace router: route cloud's budget is used up (tokens_per_day 0); a limit of 0 never frees: raise it in the inference section",
      },
    });
    expect(fake.requests.length).toBe(sent);
    expect(r.inferenceEvents().at(-1)).toMatchObject({
      disposition: 'Blocked',
      http_response: { code: 429 },
    });
  });
});
