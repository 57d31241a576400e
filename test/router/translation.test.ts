/**
 * Protocol translation through the router (acceptance: a Responses request answered by a
 * chat-completions-only provider, an Anthropic request answered by an OpenAI-compatible one, with
 * tool calls and streaming), asserting both what the fake provider received and what the agent got.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FakeProvider, startFake } from '../helpers/fake-providers.js';
import { policy, startRouterRig, type RouterRig } from './harness.js';

let chat: FakeProvider;
let claude: FakeProvider;
let r: RouterRig;

type Ev = { event?: string; data: Record<string, unknown> };

beforeAll(async () => {
  chat = await startFake({ kind: 'openai' });
  claude = await startFake({ kind: 'anthropic', key: 'sk-ant-real-0123456789' });
  r = await startRouterRig(
    policy(`  routes:
    vllm: { provider: vllm, endpoint: "${chat.url}", model: served-model, aliases: [gpt-5, claude-sonnet] }
    claude: { provider: anthropic, endpoint: "${claude.url}", model: claude-real, credential_env: AK, aliases: [via-claude] }
  default: vllm`),
    { credentials: { AK: 'sk-ant-real-0123456789' } },
  );
});
afterAll(async () => {
  await r.close();
  await chat.close();
  await claude.close();
});

const WEATHER_TOOL = {
  type: 'function',
  name: 'get_weather',
  description: 'the weather in a city',
  parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
};

describe('Responses → a chat-only provider', () => {
  it('translates instructions, input and tools, and answers a Response', async () => {
    const res = await r.call('/v1/responses', {
      model: 'gpt-5',
      instructions: 'be brief',
      input: [{ role: 'user', content: [{ type: 'input_text', text: 'weather?' }] }],
      tools: [WEATHER_TOOL],
      max_output_tokens: 50,
    });
    expect(res.status).toBe(200);
    const sent = chat.requests.at(-1)!;
    expect(sent.path).toBe('/v1/chat/completions');
    expect(sent.body).toMatchObject({
      model: 'served-model',
      max_tokens: 50,
      messages: [
        { role: 'system', content: 'be brief' },
        { role: 'user', content: 'weather?' },
      ],
      tools: [{ type: 'function', function: { name: 'get_weather', parameters: WEATHER_TOOL.parameters } }],
    });
    expect(res.json()).toMatchObject({
      object: 'response',
      status: 'completed',
      output: [
        {
          type: 'message',
          role: 'assistant',
          content: [{ type: 'output_text', text: 'You said: weather?' }],
        },
      ],
      usage: { input_tokens: 11, output_tokens: 7 },
    });
    expect(r.inferenceEvents().at(-1)!.unmapped.inference).toMatchObject({
      api: 'responses',
      translation: 'responses→chat.completions',
      tokens_in: 11,
      tokens_out: 7,
    });
  });

  it('carries function calls and their outputs both ways, streamed', async () => {
    chat.reply = () => ({ toolCalls: [{ name: 'get_weather', arguments: '{"city":"Paris"}' }] });
    try {
      const res = await r.call('/v1/responses', {
        model: 'gpt-5',
        stream: true,
        input: [
          { role: 'user', content: 'weather in Paris and Rome?' },
          { type: 'function_call', call_id: 'call_a', name: 'get_weather', arguments: '{"city":"Rome"}' },
          { type: 'function_call_output', call_id: 'call_a', output: 'sunny' },
        ],
        tools: [WEATHER_TOOL],
      });
      expect(chat.requests.at(-1)!.body).toMatchObject({
        stream: true,
        messages: [
          { role: 'user', content: 'weather in Paris and Rome?' },
          {
            role: 'assistant',
            tool_calls: [
              {
                id: 'call_a',
                type: 'function',
                function: { name: 'get_weather', arguments: '{"city":"Rome"}' },
              },
            ],
          },
          { role: 'tool', tool_call_id: 'call_a', content: 'sunny' },
        ],
      });
      const events = res.events() as Ev[];
      const types = events.map((e) => e.event);
      expect(types[0]).toBe('response.created');
      expect(types.at(-1)).toBe('response.completed');
      expect(types).toContain('response.output_item.added');
      expect(types).toContain('response.function_call_arguments.delta');
      const args = events
        .filter((e) => e.event === 'response.function_call_arguments.delta')
        .map((e) => e.data.delta)
        .join('');
      expect(args).toBe('{"city":"Paris"}');
      const done = events.find((e) => e.event === 'response.output_item.done')!.data.item;
      expect(done).toMatchObject({
        type: 'function_call',
        name: 'get_weather',
        arguments: '{"city":"Paris"}',
        call_id: 'call_0',
      });
      const completed = events.at(-1)!.data.response as Record<string, unknown>;
      expect(completed).toMatchObject({ status: 'completed', usage: { input_tokens: 11, output_tokens: 7 } });
      // Every event carries its sequence number, in order.
      expect(events.map((e) => e.data.sequence_number)).toEqual(events.map((_, i) => i));
    } finally {
      chat.reply = (b) => ({
        text: `You said: ${String((b.messages as { content: string }[]).at(-1)?.content)}`,
      });
    }
  });

  it('refuses what needs the provider to keep state, with a reason', async () => {
    const res = await r.call('/v1/responses', {
      model: 'gpt-5',
      input: 'hi',
      previous_response_id: 'resp_1',
    });
    expect(res.status).toBe(400);
    expect(res.json()).toMatchObject({ error: { message: expect.stringContaining('previous_response_id') } });
  });
});

describe('Anthropic messages → an OpenAI-compatible provider', () => {
  const tools = [{ name: 'get_weather', description: 'weather', input_schema: WEATHER_TOOL.parameters }];

  it('translates system, messages, tool results and tools; answers a message with tool_use', async () => {
    chat.reply = () => ({ toolCalls: [{ name: 'get_weather', arguments: '{"city":"Oslo"}' }] });
    const res = await r.call(
      '/v1/messages',
      {
        model: 'claude-sonnet',
        max_tokens: 100,
        system: 'you are terse',
        tools,
        tool_choice: { type: 'any' },
        messages: [
          { role: 'user', content: 'weather?' },
          {
            role: 'assistant',
            content: [{ type: 'tool_use', id: 'toolu_1', name: 'get_weather', input: { city: 'Rome' } }],
          },
          {
            role: 'user',
            content: [
              { type: 'tool_result', tool_use_id: 'toolu_1', content: 'sunny' },
              { type: 'text', text: 'and Oslo?' },
            ],
          },
        ],
      },
      { 'anthropic-version': '2023-06-01', 'x-api-key': 'dummy' },
    );
    expect(res.status).toBe(200);
    const sent = chat.requests.at(-1)!;
    expect(sent.headers['anthropic-version']).toBeUndefined();
    expect(sent.body).toMatchObject({
      model: 'served-model',
      max_tokens: 100,
      tool_choice: 'required',
      tools: [{ type: 'function', function: { name: 'get_weather' } }],
      messages: [
        { role: 'system', content: 'you are terse' },
        { role: 'user', content: 'weather?' },
        {
          role: 'assistant',
          tool_calls: [{ id: 'toolu_1', function: { name: 'get_weather', arguments: '{"city":"Rome"}' } }],
        },
        { role: 'tool', tool_call_id: 'toolu_1', content: 'sunny' },
        { role: 'user', content: 'and Oslo?' },
      ],
    });
    expect(res.json()).toMatchObject({
      type: 'message',
      role: 'assistant',
      stop_reason: 'tool_use',
      content: [{ type: 'tool_use', name: 'get_weather', input: { city: 'Oslo' } }],
      usage: { input_tokens: 11, output_tokens: 7 },
    });
  });

  it('streams text and tool_use blocks as Anthropic events', async () => {
    chat.reply = () => ({
      text: 'Checking.',
      toolCalls: [{ name: 'get_weather', arguments: '{"city":"Oslo"}' }],
    });
    const res = await r.call('/v1/messages', {
      model: 'claude-sonnet',
      max_tokens: 100,
      stream: true,
      tools,
      messages: [{ role: 'user', content: 'weather in Oslo?' }],
    });
    const events = res.events() as Ev[];
    expect(events[0]!.event).toBe('message_start');
    expect(events.at(-1)!.event).toBe('message_stop');
    const starts = events.filter((e) => e.event === 'content_block_start').map((e) => e.data.content_block);
    expect(starts).toEqual([
      { type: 'text', text: '' },
      expect.objectContaining({ type: 'tool_use', name: 'get_weather', input: {} }),
    ]);
    const text = events
      .filter(
        (e) => e.event === 'content_block_delta' && (e.data.delta as { type: string }).type === 'text_delta',
      )
      .map((e) => (e.data.delta as { text: string }).text)
      .join('');
    const json = events
      .filter(
        (e) =>
          e.event === 'content_block_delta' && (e.data.delta as { type: string }).type === 'input_json_delta',
      )
      .map((e) => (e.data.delta as { partial_json: string }).partial_json)
      .join('');
    expect(text).toBe('Checking.');
    expect(JSON.parse(json)).toEqual({ city: 'Oslo' });
    const delta = events.find((e) => e.event === 'message_delta')!.data;
    expect(delta).toMatchObject({ delta: { stop_reason: 'tool_use' }, usage: { output_tokens: 7 } });
    chat.reply = (b) => ({
      text: `You said: ${String((b.messages as { content: string }[]).at(-1)?.content)}`,
    });
  });
});

describe('Chat completions and Responses → an Anthropic provider', () => {
  it('translates a chat request to messages and the answer back, streamed and not', async () => {
    const plain = await r.call('/v1/chat/completions', {
      model: 'via-claude',
      messages: [
        { role: 'system', content: 'sys' },
        { role: 'user', content: 'hello' },
      ],
    });
    expect(claude.requests.at(-1)!.body).toMatchObject({
      model: 'claude-real',
      system: 'sys',
      max_tokens: 8192,
      messages: [{ role: 'user', content: [{ type: 'text', text: 'hello' }] }],
    });
    expect(claude.requests.at(-1)!.headers['anthropic-version']).toBe('2023-06-01');
    expect(claude.seenKeys().at(-1)).toBe('sk-ant-real-0123456789');
    expect(plain.json()).toMatchObject({
      object: 'chat.completion',
      choices: [{ message: { role: 'assistant', content: 'You said: hello' }, finish_reason: 'stop' }],
      usage: { prompt_tokens: 13, completion_tokens: 8 },
    });
    const streamed = await r.call('/v1/chat/completions', {
      model: 'via-claude',
      stream: true,
      messages: [{ role: 'user', content: 'stream' }],
    });
    const events = streamed.events();
    const text = events
      .map(
        (e) =>
          (e.data as { choices?: { delta?: { content?: string } }[] }).choices?.[0]?.delta?.content ?? '',
      )
      .join('');
    expect(text).toBe('You said: stream');
    expect(events.at(-1)!.data).toBe('[DONE]');
  });

  it('translates a Responses request through chat to messages', async () => {
    const res = await r.call('/v1/responses', { model: 'via-claude', input: 'twice translated' });
    expect(claude.requests.at(-1)!.body).toMatchObject({
      messages: [{ role: 'user', content: [{ type: 'text', text: 'twice translated' }] }],
    });
    expect(res.json()).toMatchObject({ output: [{ content: [{ text: 'You said: twice translated' }] }] });
    expect(r.inferenceEvents().at(-1)!.unmapped.inference).toMatchObject({
      translation: 'responses→chat.completions→messages',
    });
  });

  it('refuses an API the provider cannot serve in any form', async () => {
    const res = await r.call('/v1/embeddings', { model: 'via-claude', input: 'x' });
    expect(res.status).toBe(400);
    expect(res.json()).toMatchObject({
      error: { message: expect.stringContaining('does not serve embeddings') },
    });
  });
});
