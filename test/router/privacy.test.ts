/**
 * Privacy routing (acceptance: a prompt carrying a payment card number goes to the local route, or
 * is redacted and restored, or denied, per the rule; with the local route down and fail_closed the
 * call fails and nothing reaches the cloud provider).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FakeProvider, startFake } from '../helpers/fake-providers.js';
import { chatStreamText, policy, startRouterRig, type RouterRig } from './harness.js';

const CARD = '4111 1111 1111 1111';
const EMAIL = 'jane.doe@example.com';
let cloud: FakeProvider;
let local: FakeProvider;

beforeAll(async () => {
  cloud = await startFake({ kind: 'openai', deltaSize: 3 });
  local = await startFake({ kind: 'openai' });
});
afterAll(async () => {
  await cloud.close();
  await local.close();
});

const routes = (localUrl = local.url) => `  routes:
    cloud: { provider: openai-compatible, endpoint: "${cloud.url}", model: big, on_unavailable: fallback, fallback: cloud2 }
    cloud2: { provider: openai-compatible, endpoint: "${cloud.url}", model: big2 }
    local: { provider: vllm, endpoint: "${localUrl}", model: small, local: true, on_unavailable: fallback, fallback: cloud }
  default: cloud`;

const ask = (content: string, extra: Record<string, unknown> = {}) => ({
  model: 'anything',
  messages: [{ role: 'user', content }],
  ...extra,
});

describe('a rule that routes', () => {
  let r: RouterRig;
  beforeAll(async () => {
    r = await startRouterRig(
      policy(`${routes()}
  privacy:
    - { name: cards, detect: [payment_card], route: local }`),
    );
  });
  afterAll(() => r.close());

  it('sends a prompt with a card number to the local route, and others to the cloud', async () => {
    const before = { cloud: cloud.requests.length, local: local.requests.length };
    const res = await r.call('/v1/chat/completions', ask(`my card is ${CARD}`));
    expect(res.status).toBe(200);
    expect(local.requests.length).toBe(before.local + 1);
    expect(cloud.requests.length).toBe(before.cloud);
    expect(local.requests.at(-1)!.raw).toContain(CARD); // a local model gets the prompt as written
    const ev = r.inferenceEvents().at(-1)!;
    expect(ev.unmapped.inference).toMatchObject({
      route: 'local',
      selected_by: 'privacy rule cards',
      rules: ['cards'],
    });
    expect(JSON.stringify(ev)).not.toContain(CARD);
    expect((await r.call('/v1/chat/completions', ask('no secrets here'))).status).toBe(200);
    expect(cloud.requests.length).toBe(before.cloud + 1);
  });

  it('also finds the card in a system prompt, a tool result or tool arguments', async () => {
    const before = local.requests.length;
    await r.call('/v1/chat/completions', {
      model: 'x',
      messages: [
        { role: 'user', content: 'look it up' },
        {
          role: 'assistant',
          tool_calls: [{ id: 'c1', type: 'function', function: { name: 'lookup', arguments: '{}' } }],
        },
        { role: 'tool', tool_call_id: 'c1', content: `found ${CARD.replace(/ /g, '-')}` },
      ],
    });
    expect(local.requests.length).toBe(before + 1);
  });

  it('fails closed when the local route is down: nothing reaches any cloud route, even as its fallback', async () => {
    const down = await startRouterRig(
      policy(`${routes('http://127.0.0.1:9/v1')}
  privacy:
    - { name: cards, detect: [payment_card], route: local }`),
    );
    try {
      const before = cloud.requests.length;
      const res = await down.call('/v1/chat/completions', ask(`card ${CARD}`));
      expect(res.status).toBe(503);
      expect(res.json()).toMatchObject({
        error: {
          code: 'route_unavailable',
          message: expect.stringContaining('privacy rule "cards" keeps this request on local routes'),
        },
      });
      expect(cloud.requests.length).toBe(before);
      expect(down.inferenceEvents().at(-1)).toMatchObject({ disposition: 'Blocked' });
      // Without the card, the same route falls back as the policy says.
      const plain = await down.call('/v1/chat/completions', ask('hello', { model: 'local' }));
      expect(plain.status).toBe(200);
      expect(cloud.requests.length).toBe(before + 1);
      expect(down.inferenceEvents().at(-1)!.unmapped.inference).toMatchObject({
        route: 'cloud',
        fallback_from: 'local',
      });
    } finally {
      await down.close();
    }
  });
});

describe('a rule that redacts', () => {
  let r: RouterRig;
  beforeAll(async () => {
    r = await startRouterRig(
      policy(`${routes()}
  privacy:
    - { name: contacts, detect: [email, payment_card], action: redact }
    - { name: project-codes, match: "PRJ-[0-9]{4}", action: redact }`),
    );
  });
  afterAll(() => r.close());

  it('sends placeholders to the cloud and restores them in the answer', async () => {
    const res = await r.call('/v1/chat/completions', ask(`mail ${EMAIL} about PRJ-0042, card ${CARD}`));
    const sent = cloud.requests.at(-1)!.raw;
    expect(sent).not.toContain(EMAIL);
    expect(sent).not.toContain(CARD);
    expect(sent).not.toContain('PRJ-0042');
    expect(sent).toMatch(/\[EMAIL_[0-9A-F]{8}\]/);
    expect(sent).toMatch(/\[CARD_[0-9A-F]{8}\]/);
    expect(sent).toMatch(/\[PROJECT_CODES_[0-9A-F]{8}\]/);
    expect(res.json()).toMatchObject({
      choices: [{ message: { content: `You said: mail ${EMAIL} about PRJ-0042, card ${CARD}` } }],
    });
    expect(r.inferenceEvents().at(-1)!.unmapped.inference).toMatchObject({
      rules: ['contacts', 'project-codes'],
      redactions: 3,
    });
  });

  it('restores placeholders split across streamed events (3 characters per delta)', async () => {
    const res = await r.call('/v1/chat/completions', ask(`mail ${EMAIL} now`, { stream: true }));
    const events = res.events();
    expect(chatStreamText(events)).toBe(`You said: mail ${EMAIL} now`);
    // No event carries a piece of a placeholder.
    expect(res.text).not.toMatch(/\[EMA|IL_[0-9A-F]/);
    expect(events.at(-1)!.data).toBe('[DONE]');
  });

  it('gives the same value the same placeholder every time (a conversation stays consistent)', async () => {
    await r.call('/v1/chat/completions', ask(`one ${EMAIL}`));
    const a = /\[EMAIL_[0-9A-F]{8}\]/.exec(cloud.requests.at(-1)!.raw)![0];
    await r.call('/v1/chat/completions', ask(`two ${EMAIL}`));
    const b = /\[EMAIL_[0-9A-F]{8}\]/.exec(cloud.requests.at(-1)!.raw)![0];
    expect(a).toBe(b);
  });

  it('restores values in tool-call arguments as JSON, streamed', async () => {
    cloud.reply = (body) => {
      const text = JSON.stringify(body.messages);
      const ph = /\[EMAIL_[0-9A-F]{8}\]/.exec(text)![0];
      return { toolCalls: [{ name: 'send_mail', arguments: JSON.stringify({ to: ph }) }] };
    };
    try {
      const res = await r.call('/v1/chat/completions', ask(`mail ${EMAIL}`, { stream: true }));
      const args = res
        .events()
        .map(
          (e) =>
            (e.data as { choices?: { delta?: { tool_calls?: { function?: { arguments?: string } }[] } }[] })
              ?.choices?.[0]?.delta?.tool_calls?.[0]?.function?.arguments ?? '',
        )
        .join('');
      expect(JSON.parse(args)).toEqual({ to: EMAIL });
    } finally {
      cloud.reply = (b) => ({
        text: `You said: ${String((b.messages as { content: string }[]).at(-1)?.content)}`,
      });
    }
  });

  it('restores in translated streams too (Anthropic events, Responses events)', async () => {
    const m = await r.call('/v1/messages', {
      model: 'x',
      max_tokens: 50,
      stream: true,
      messages: [{ role: 'user', content: `hi ${EMAIL}` }],
    });
    const text = m
      .events()
      .filter((e) => e.event === 'content_block_delta')
      .map((e) => (e.data as { delta: { text: string } }).delta.text)
      .join('');
    expect(text).toBe(`You said: hi ${EMAIL}`);
    const resp = await r.call('/v1/responses', { model: 'x', stream: true, input: `hello ${EMAIL}` });
    const events = resp.events() as { event?: string; data: Record<string, unknown> }[];
    const deltas = events
      .filter((e) => e.event === 'response.output_text.delta')
      .map((e) => e.data.delta)
      .join('');
    expect(deltas).toBe(`You said: hello ${EMAIL}`);
    const done = events.find((e) => e.event === 'response.output_text.done')!.data;
    expect(done.text).toBe(`You said: hello ${EMAIL}`);
    expect(JSON.stringify(events.at(-1)!.data)).toContain(EMAIL);
  });

  it('does not redact what goes to a local route', async () => {
    await r.call('/v1/chat/completions', ask(`local ${EMAIL}`, { model: 'local' }));
    expect(local.requests.at(-1)!.raw).toContain(EMAIL);
  });
});

describe('a rule that denies', () => {
  it('answers 403 with the rule’s name, sends nothing anywhere and audits the refusal', async () => {
    const r = await startRouterRig(
      policy(`${routes()}
  privacy:
    - { name: no-private-keys, detect: [private_key], action: deny }
    - { name: cards, detect: [payment_card], route: local }`),
    );
    try {
      const before = { cloud: cloud.requests.length, local: local.requests.length };
      const res = await r.call(
        '/v1/chat/completions',
        ask(`-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY----- and ${CARD}`),
      );
      expect(res.status).toBe(403);
      expect(res.json()).toMatchObject({
        error: { code: 'privacy_rule_denied', message: expect.stringContaining('"no-private-keys"') },
      });
      expect({ cloud: cloud.requests.length, local: local.requests.length }).toEqual(before);
      const ev = r.inferenceEvents().at(-1)!;
      expect(ev).toMatchObject({
        disposition: 'Blocked',
        unmapped: { inference: { rules: ['no-private-keys', 'cards'] } },
      });
      expect(JSON.stringify(ev)).not.toContain('MIIE');
      // An Anthropic client gets the refusal in its own error shape.
      const a = await r.call('/v1/messages', {
        model: 'x',
        max_tokens: 5,
        messages: [{ role: 'user', content: '-----BEGIN PRIVATE KEY-----' }],
      });
      expect(a.json()).toMatchObject({ type: 'error', error: { type: 'permission_error' } });
    } finally {
      await r.close();
    }
  });
});
