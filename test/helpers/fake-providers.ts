/**
 * Fake model providers on 127.0.0.1: the one thing the router's tests cannot run for real (a
 * cloud model API). They speak the wire protocols — OpenAI's chat completions, completions,
 * Responses (when asked to), embeddings and models; Anthropic's messages and models — as JSON and
 * as SSE streams with tool calls, and record every request they receive (method, path, headers,
 * body) so that tests can assert what reached the provider: the real key, never the agent's.
 *
 * What the model "says" is scripted per test (`reply`); by default it repeats the last user text
 * (`You said: …`), which lets tests see redaction placeholders travel out and back.
 */
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';

export interface Recorded {
  method: string;
  path: string;
  headers: http.IncomingHttpHeaders;
  body: Record<string, unknown> | null;
  raw: string;
}

export interface ScriptedReply {
  text?: string;
  toolCalls?: { name: string; arguments: string }[];
  usage?: { input: number; output: number };
}

export interface FakeOptions {
  kind: 'openai' | 'anthropic';
  /** The key requests must carry (Bearer, or x-api-key for Anthropic); none: any. */
  key?: string;
  /** Serve POST /v1/responses (OpenAI's own API); chat-only servers do not. */
  responses?: boolean;
  /** Characters per streamed delta (small, to split placeholders across events). */
  deltaSize?: number;
  /** Milliseconds between streamed events (or between bursts of `burst` events). */
  eventDelayMs?: number;
  /** Events written back to back before each `eventDelayMs` pause (default 1). */
  burst?: number;
  /** Milliseconds before the answer starts. */
  firstByteDelayMs?: number;
  /** Serve HTTPS with this key and certificate (a cloud provider's TLS). */
  tls?: https.ServerOptions;
  /** The host name in its URL (default 127.0.0.1; `localhost` for TLS with SNI). */
  host?: string;
}

function lastUserText(body: Record<string, unknown>): string {
  const fromContent = (c: unknown): string =>
    typeof c === 'string'
      ? c
      : Array.isArray(c)
        ? c
            .map((p) =>
              typeof p === 'object' && p !== null ? String((p as { text?: unknown }).text ?? '') : '',
            )
            .join('')
        : '';
  const messages = Array.isArray(body.messages) ? (body.messages as Record<string, unknown>[]) : [];
  for (let i = messages.length - 1; i >= 0; i--)
    if (messages[i]?.role === 'user') return fromContent(messages[i]?.content);
  if (typeof body.input === 'string') return body.input;
  if (Array.isArray(body.input)) {
    const items = body.input as Record<string, unknown>[];
    for (let i = items.length - 1; i >= 0; i--)
      if (items[i]?.role === 'user') return fromContent(items[i]?.content);
  }
  if (typeof body.prompt === 'string') return body.prompt;
  return '';
}

export class FakeProvider {
  readonly requests: Recorded[] = [];
  /** What the model answers; default: `You said: <last user text>`. */
  reply: (body: Record<string, unknown>) => ScriptedReply = (b) => ({ text: `You said: ${lastUserText(b)}` });
  /** Answer every call with this status (503: down for maintenance, say). */
  failWith: number | null = null;
  /** Streams this many extra filler deltas after the text (throughput and slow-reader tests). */
  fillerDeltas = 0;
  /** Bytes of streamed answers written so far (what the kernel and the router took). */
  streamedBytes = 0;
  private blockedWaiters: (() => void)[] = [];
  private isBlocked = false;
  private server!: http.Server;
  port = 0;

  constructor(readonly opts: FakeOptions) {}

  get url(): string {
    const scheme = this.opts.tls !== undefined ? 'https' : 'http';
    const host = this.opts.host ?? '127.0.0.1';
    return this.opts.kind === 'anthropic'
      ? `${scheme}://${host}:${this.port}`
      : `${scheme}://${host}:${this.port}/v1`;
  }

  async start(port = 0): Promise<this> {
    const handler: http.RequestListener = (req, res) => void this.handle(req, res);
    this.server =
      this.opts.tls !== undefined ? https.createServer(this.opts.tls, handler) : http.createServer(handler);
    this.server.keepAliveTimeout = 60_000;
    await new Promise<void>((r) => this.server.listen(port, '127.0.0.1', r));
    this.port = (this.server.address() as AddressInfo).port;
    return this;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }

  /** Resolves when a streamed write waits for its reader (backpressure): now, or the next time. */
  blocked(): Promise<void> {
    if (this.isBlocked) return Promise.resolve();
    return new Promise((r) => this.blockedWaiters.push(r));
  }

  /** The keys seen in auth headers, for assertions. */
  seenKeys(): string[] {
    return this.requests.map((r) => {
      const a = r.headers.authorization;
      return String(
        this.opts.kind === 'anthropic'
          ? r.headers['x-api-key']
          : typeof a === 'string'
            ? a.replace(/^Bearer /, '')
            : '',
      );
    });
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req as AsyncIterable<Buffer>) chunks.push(c);
    const raw = Buffer.concat(chunks).toString('utf8');
    let body: Record<string, unknown> | null = null;
    try {
      body = raw === '' ? null : (JSON.parse(raw) as Record<string, unknown>);
    } catch {
      body = null;
    }
    const path = (req.url ?? '').split('?')[0] ?? '';
    this.requests.push({ method: req.method ?? '', path, headers: req.headers, body, raw });
    const json = (status: number, value: unknown): void => {
      const text = JSON.stringify(value);
      res.writeHead(status, {
        'content-type': 'application/json',
        'content-length': Buffer.byteLength(text),
      });
      res.end(text);
    };
    const anthropic = this.opts.kind === 'anthropic';
    if (this.opts.key !== undefined) {
      const given = anthropic
        ? req.headers['x-api-key']
        : String(req.headers.authorization ?? '').replace(/^Bearer /, '');
      if (given !== this.opts.key) {
        return anthropic
          ? json(401, {
              type: 'error',
              error: { type: 'authentication_error', message: 'invalid x-api-key' },
            })
          : json(401, {
              error: {
                message: `Incorrect API key provided: ${String(given)}`,
                type: 'invalid_request_error',
              },
            });
      }
    }
    if (this.failWith !== null)
      return json(this.failWith, { error: { message: 'fake provider: failing on purpose' } });
    if (this.opts.firstByteDelayMs) await sleep(this.opts.firstByteDelayMs);
    if (req.method === 'GET' && path.endsWith('/models'))
      return json(
        200,
        anthropic
          ? { data: [{ type: 'model', id: 'claude-fake' }], has_more: false }
          : { object: 'list', data: [{ id: 'fake-model', object: 'model' }] },
      );
    if (body === null) return json(400, { error: { message: 'no JSON body' } });
    if (anthropic && path === '/v1/messages') return this.messages(body, res, json);
    if (!anthropic && path === '/v1/chat/completions') return this.chat(body, res, json);
    if (!anthropic && path === '/v1/completions') return this.completions(body, res, json);
    if (!anthropic && path === '/v1/embeddings')
      return json(200, {
        object: 'list',
        data: [{ object: 'embedding', index: 0, embedding: [0.1, 0.2, 0.3] }],
        model: body.model,
        usage: { prompt_tokens: 5, total_tokens: 5 },
      });
    if (!anthropic && path === '/v1/responses' && this.opts.responses === true)
      return this.responses(body, res, json);
    return json(404, { error: { message: `fake provider: no route ${path}` } });
  }

  private deltas(text: string): string[] {
    const size = this.opts.deltaSize ?? 4;
    const out: string[] = [];
    for (let i = 0; i < text.length; i += size) out.push(text.slice(i, i + size));
    for (let i = 0; i < this.fillerDeltas; i++) out.push(' token');
    return out;
  }

  private async sse(res: http.ServerResponse, events: { event?: string; data: unknown }[]): Promise<void> {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    let sent = 0;
    for (const e of events) {
      const text = `${e.event ? `event: ${e.event}\n` : ''}data: ${typeof e.data === 'string' ? e.data : JSON.stringify(e.data)}\n\n`;
      this.streamedBytes += Buffer.byteLength(text);
      if (!res.write(text)) {
        this.isBlocked = true;
        for (const w of this.blockedWaiters.splice(0)) w();
        await new Promise((r) => res.once('drain', r));
        this.isBlocked = false;
      }
      sent++;
      if (this.opts.eventDelayMs && sent % (this.opts.burst ?? 1) === 0) await sleep(this.opts.eventDelayMs);
    }
    res.end();
  }

  private chat(
    body: Record<string, unknown>,
    res: http.ServerResponse,
    json: (s: number, v: unknown) => void,
  ): Promise<void> | void {
    const r = this.reply(body);
    const usage = {
      prompt_tokens: r.usage?.input ?? 11,
      completion_tokens: r.usage?.output ?? 7,
      total_tokens: (r.usage?.input ?? 11) + (r.usage?.output ?? 7),
    };
    const calls = (r.toolCalls ?? []).map((c, i) => ({ id: `call_${i}`, type: 'function', function: c }));
    const finish = calls.length > 0 ? 'tool_calls' : 'stop';
    const base = { id: 'chatcmpl-fake', created: 1700000000, model: String(body.model) };
    if (body.stream !== true)
      return json(200, {
        ...base,
        object: 'chat.completion',
        choices: [
          {
            index: 0,
            message: {
              role: 'assistant',
              content: r.text ?? null,
              ...(calls.length ? { tool_calls: calls } : {}),
            },
            finish_reason: finish,
          },
        ],
        usage,
      });
    const chunk = (delta: Record<string, unknown>, finish_reason: string | null = null) => ({
      data: { ...base, object: 'chat.completion.chunk', choices: [{ index: 0, delta, finish_reason }] },
    });
    const events: { data: unknown }[] = [chunk({ role: 'assistant', content: '' })];
    for (const d of this.deltas(r.text ?? '')) events.push(chunk({ content: d }));
    calls.forEach((c, i) => {
      events.push(
        chunk({
          tool_calls: [
            { index: i, id: c.id, type: 'function', function: { name: c.function.name, arguments: '' } },
          ],
        }),
      );
      for (const d of this.deltas(c.function.arguments))
        events.push(chunk({ tool_calls: [{ index: i, function: { arguments: d } }] }));
    });
    events.push(chunk({}, finish));
    const so = body.stream_options as { include_usage?: boolean } | undefined;
    if (so?.include_usage)
      events.push({ data: { ...base, object: 'chat.completion.chunk', choices: [], usage } });
    events.push({ data: '[DONE]' });
    return this.sse(res, events);
  }

  private completions(
    body: Record<string, unknown>,
    res: http.ServerResponse,
    json: (s: number, v: unknown) => void,
  ): Promise<void> | void {
    const r = this.reply(body);
    const base = {
      id: 'cmpl-fake',
      object: 'text_completion',
      created: 1700000000,
      model: String(body.model),
    };
    const usage = { prompt_tokens: 3, completion_tokens: 4, total_tokens: 7 };
    if (body.stream !== true)
      return json(200, {
        ...base,
        choices: [{ index: 0, text: r.text ?? '', finish_reason: 'stop' }],
        usage,
      });
    const events: { data: unknown }[] = this.deltas(r.text ?? '').map((d) => ({
      data: { ...base, choices: [{ index: 0, text: d, finish_reason: null }] },
    }));
    events.push({ data: { ...base, choices: [{ index: 0, text: '', finish_reason: 'stop' }] } });
    const so = body.stream_options as { include_usage?: boolean } | undefined;
    if (so?.include_usage) events.push({ data: { ...base, choices: [], usage } });
    events.push({ data: '[DONE]' });
    return this.sse(res, events);
  }

  private responses(
    body: Record<string, unknown>,
    res: http.ServerResponse,
    json: (s: number, v: unknown) => void,
  ): Promise<void> | void {
    const r = this.reply(body);
    const output: Record<string, unknown>[] = [
      {
        type: 'message',
        id: 'msg_fake',
        status: 'completed',
        role: 'assistant',
        content: [{ type: 'output_text', text: r.text ?? '', annotations: [] }],
      },
    ];
    // Tool calls as the Responses API gives them: function_call items after the message.
    const calls = (r.toolCalls ?? []).map((c, i) => ({
      type: 'function_call',
      id: `fc_fake_${i}`,
      call_id: `call_fake_${i}`,
      name: c.name,
      arguments: c.arguments,
      status: 'completed',
    }));
    output.push(...calls);
    const response = {
      id: 'resp_fake',
      object: 'response',
      created_at: 1700000000,
      status: 'completed',
      model: String(body.model),
      output,
      usage: { input_tokens: 9, output_tokens: 5, total_tokens: 14 },
    };
    if (body.stream !== true) return json(200, response);
    let seq = 0;
    const ev = (type: string, rest: Record<string, unknown>) => ({
      event: type,
      data: { type, sequence_number: seq++, ...rest },
    });
    const events = [
      ev('response.created', { response: { ...response, status: 'in_progress', output: [] } }),
      ev('response.output_item.added', {
        output_index: 0,
        item: { ...output[0], status: 'in_progress', content: [] },
      }),
      ...this.deltas(r.text ?? '').map((d) =>
        ev('response.output_text.delta', {
          item_id: 'msg_fake',
          output_index: 0,
          content_index: 0,
          delta: d,
        }),
      ),
      ev('response.output_text.done', {
        item_id: 'msg_fake',
        output_index: 0,
        content_index: 0,
        text: r.text ?? '',
      }),
      ev('response.output_item.done', { output_index: 0, item: output[0] }),
      ...calls.flatMap((item, i) => [
        ev('response.output_item.added', {
          output_index: i + 1,
          item: { ...item, status: 'in_progress', arguments: '' },
        }),
        ev('response.function_call_arguments.delta', {
          item_id: item.id,
          output_index: i + 1,
          delta: item.arguments,
        }),
        ev('response.function_call_arguments.done', {
          item_id: item.id,
          output_index: i + 1,
          arguments: item.arguments,
        }),
        ev('response.output_item.done', { output_index: i + 1, item }),
      ]),
      ev('response.completed', { response }),
    ];
    return this.sse(res, events);
  }

  private messages(
    body: Record<string, unknown>,
    res: http.ServerResponse,
    json: (s: number, v: unknown) => void,
  ): Promise<void> | void {
    const r = this.reply(body);
    const content: Record<string, unknown>[] = [];
    if (r.text) content.push({ type: 'text', text: r.text });
    (r.toolCalls ?? []).forEach((c, i) =>
      content.push({
        type: 'tool_use',
        id: `toolu_${i}`,
        name: c.name,
        input: JSON.parse(c.arguments) as unknown,
      }),
    );
    const stop = (r.toolCalls ?? []).length > 0 ? 'tool_use' : 'end_turn';
    const usage = { input_tokens: r.usage?.input ?? 13, output_tokens: r.usage?.output ?? 8 };
    const message = {
      id: 'msg_fake',
      type: 'message',
      role: 'assistant',
      model: String(body.model),
      content,
      stop_reason: stop,
      stop_sequence: null,
      usage,
    };
    if (body.stream !== true) return json(200, message);
    const events: { event: string; data: unknown }[] = [
      {
        event: 'message_start',
        data: {
          type: 'message_start',
          message: {
            ...message,
            content: [],
            stop_reason: null,
            usage: { input_tokens: usage.input_tokens, output_tokens: 1 },
          },
        },
      },
      { event: 'ping', data: { type: 'ping' } },
    ];
    let index = 0;
    if (r.text) {
      events.push({
        event: 'content_block_start',
        data: { type: 'content_block_start', index, content_block: { type: 'text', text: '' } },
      });
      for (const d of this.deltas(r.text))
        events.push({
          event: 'content_block_delta',
          data: { type: 'content_block_delta', index, delta: { type: 'text_delta', text: d } },
        });
      events.push({ event: 'content_block_stop', data: { type: 'content_block_stop', index } });
      index++;
    }
    (r.toolCalls ?? []).forEach((c, i) => {
      events.push({
        event: 'content_block_start',
        data: {
          type: 'content_block_start',
          index,
          content_block: { type: 'tool_use', id: `toolu_${i}`, name: c.name, input: {} },
        },
      });
      for (const d of this.deltas(c.arguments))
        events.push({
          event: 'content_block_delta',
          data: { type: 'content_block_delta', index, delta: { type: 'input_json_delta', partial_json: d } },
        });
      events.push({ event: 'content_block_stop', data: { type: 'content_block_stop', index } });
      index++;
    });
    events.push({
      event: 'message_delta',
      data: {
        type: 'message_delta',
        delta: { stop_reason: stop, stop_sequence: null },
        usage: { output_tokens: usage.output_tokens },
      },
    });
    events.push({ event: 'message_stop', data: { type: 'message_stop' } });
    return this.sse(res, events);
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function startFake(opts: FakeOptions): Promise<FakeProvider> {
  return new FakeProvider(opts).start();
}
