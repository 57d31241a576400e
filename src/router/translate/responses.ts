/**
 * OpenAI Responses ↔ Chat Completions, for an agent that speaks Responses (Codex, the Agents SDK)
 * on a route whose provider speaks only chat (vLLM, Ollama, NIM, most OpenAI-compatible servers).
 *
 * What translates: instructions, text and image input, function tools and their calls and outputs,
 * tool_choice, sampling limits, JSON-schema output, streaming (text and function-call arguments,
 * with the Responses event sequence the SDKs expect). What cannot (refused with 400 and a reason,
 * never silently dropped): `previous_response_id` and item references (they need the provider to
 * keep state), built-in tools (web search, file search, computer use), file inputs.
 */
import {
  TranslationError,
  arr,
  contentText,
  copyFields,
  isObject,
  newId,
  nowSeconds,
  str,
  type ChatChunk,
  type ChatMessage,
  type ChatResponse,
  type ChatUsage,
  type Json,
} from './chat.js';

function partsToChat(content: unknown, role: string): string | Json[] {
  if (typeof content === 'string') return content;
  const parts: Json[] = [];
  for (const p of arr(content)) {
    if (!isObject(p)) continue;
    const type = str(p.type);
    if (type === 'input_text' || type === 'output_text' || type === 'text' || type === 'refusal') {
      parts.push({ type: 'text', text: str(p.text) ?? str(p.refusal) ?? '' });
    } else if (type === 'input_image') {
      const url = str(p.image_url);
      if (url === undefined)
        throw new TranslationError('input_image by file_id needs a provider that speaks the Responses API');
      parts.push({
        type: 'image_url',
        image_url: { url, ...(p.detail !== undefined ? { detail: p.detail } : {}) },
      });
    } else if (type === 'input_file') {
      throw new TranslationError('input_file needs a provider that speaks the Responses API');
    }
  }
  // Plain text is what every chat server accepts; assistant content must be text.
  if (role === 'assistant' || parts.every((p) => p.type === 'text')) return parts.map((p) => p.text).join('');
  return parts;
}

/** A Responses request as a chat request for the same model. */
export function responsesToChat(req: Json): Json {
  if (req.previous_response_id !== undefined && req.previous_response_id !== null)
    throw new TranslationError(
      'previous_response_id needs a provider that keeps responses (one that speaks the Responses API); send the whole conversation as input instead',
    );
  const messages: ChatMessage[] = [];
  const instructions = str(req.instructions);
  if (instructions !== undefined && instructions !== '')
    messages.push({ role: 'system', content: instructions });
  const input = req.input;
  if (typeof input === 'string') messages.push({ role: 'user', content: input });
  for (const raw of arr(input)) {
    if (!isObject(raw)) continue;
    const type = str(raw.type) ?? 'message';
    if (type === 'message') {
      const role = str(raw.role) ?? 'user';
      const chatRole = role === 'developer' ? 'system' : (role as ChatMessage['role']);
      messages.push({ role: chatRole, content: partsToChat(raw.content, chatRole) });
    } else if (type === 'function_call') {
      const call = {
        id: str(raw.call_id) ?? str(raw.id) ?? newId('call_'),
        type: 'function' as const,
        function: { name: str(raw.name) ?? '', arguments: str(raw.arguments) ?? '{}' },
      };
      const last = messages[messages.length - 1];
      // Parallel calls are one assistant message with several tool_calls.
      if (last !== undefined && last.role === 'assistant' && (last.tool_calls !== undefined || !last.content))
        (last.tool_calls ??= []).push(call);
      else messages.push({ role: 'assistant', content: null, tool_calls: [call] });
    } else if (type === 'function_call_output') {
      const output = raw.output;
      messages.push({
        role: 'tool',
        tool_call_id: str(raw.call_id) ?? '',
        content: typeof output === 'string' ? output : contentText(output),
      });
    } else if (type === 'reasoning') {
      continue; // the provider's own reasoning state: nothing a chat server can take
    } else if (type === 'item_reference') {
      throw new TranslationError('item_reference needs a provider that speaks the Responses API');
    } else {
      throw new TranslationError(`input item type "${type}" needs a provider that speaks the Responses API`);
    }
  }
  const chat: Json = { model: req.model, messages };
  const tools: Json[] = [];
  for (const t of arr(req.tools)) {
    if (!isObject(t)) continue;
    if (t.type !== 'function')
      throw new TranslationError(
        `tool type "${String(t.type)}" is built into the Responses API; the route's provider does not serve it`,
      );
    const fn: Json = { name: t.name, parameters: t.parameters ?? { type: 'object', properties: {} } };
    copyFields(t, fn, ['description', 'strict']);
    tools.push({ type: 'function', function: fn });
  }
  if (tools.length > 0) chat.tools = tools;
  const choice = req.tool_choice;
  if (typeof choice === 'string') chat.tool_choice = choice;
  else if (isObject(choice) && choice.type === 'function')
    chat.tool_choice = { type: 'function', function: { name: choice.name } };
  copyFields(req, chat, ['temperature', 'top_p', 'parallel_tool_calls', 'user', 'stream', 'seed']);
  if (req.max_output_tokens !== undefined) chat.max_tokens = req.max_output_tokens;
  const format = isObject(req.text) ? req.text.format : undefined;
  if (isObject(format)) {
    if (format.type === 'json_schema')
      chat.response_format = {
        type: 'json_schema',
        json_schema: { name: format.name ?? 'output', schema: format.schema, strict: format.strict ?? false },
      };
    else if (format.type === 'json_object') chat.response_format = { type: 'json_object' };
  }
  if (chat.stream === true) chat.stream_options = { include_usage: true };
  return chat;
}

function responsesUsage(u: ChatUsage | null | undefined): Json | null {
  if (!u) return null;
  return {
    input_tokens: u.prompt_tokens,
    input_tokens_details: { cached_tokens: u.prompt_tokens_details?.cached_tokens ?? 0 },
    output_tokens: u.completion_tokens,
    output_tokens_details: { reasoning_tokens: u.completion_tokens_details?.reasoning_tokens ?? 0 },
    total_tokens: u.total_tokens ?? u.prompt_tokens + u.completion_tokens,
  };
}

/** The parts of a Response object that echo the request. */
function responseShell(req: Json, id: string, created: number, model: string): Json {
  return {
    id,
    object: 'response',
    created_at: created,
    status: 'in_progress',
    error: null,
    incomplete_details: null,
    instructions: req.instructions ?? null,
    max_output_tokens: req.max_output_tokens ?? null,
    model,
    output: [],
    parallel_tool_calls: req.parallel_tool_calls ?? true,
    previous_response_id: null,
    reasoning: { effort: null, summary: null },
    store: false,
    temperature: req.temperature ?? null,
    text: req.text ?? { format: { type: 'text' } },
    tool_choice: req.tool_choice ?? 'auto',
    tools: req.tools ?? [],
    top_p: req.top_p ?? null,
    truncation: 'disabled',
    usage: null,
    user: req.user ?? null,
    metadata: req.metadata ?? {},
  };
}

function finish(resp: Json, reason: string | null, usage: Json | null): Json {
  resp.status = reason === 'length' ? 'incomplete' : 'completed';
  if (reason === 'length') resp.incomplete_details = { reason: 'max_output_tokens' };
  resp.usage = usage;
  return resp;
}

/** A chat response as the Response the agent asked for. */
export function chatToResponse(chat: ChatResponse, req: Json, agentModel: string): Json {
  const resp = responseShell(req, newId('resp_'), chat.created ?? nowSeconds(), agentModel);
  const choice = chat.choices?.[0];
  const output: Json[] = [];
  const text = choice ? contentText(choice.message?.content) : '';
  if (text !== '')
    output.push({
      type: 'message',
      id: newId('msg_'),
      status: 'completed',
      role: 'assistant',
      content: [{ type: 'output_text', text, annotations: [] }],
    });
  for (const call of choice?.message?.tool_calls ?? [])
    output.push({
      type: 'function_call',
      id: newId('fc_'),
      call_id: call.id,
      name: call.function.name,
      arguments: call.function.arguments,
      status: 'completed',
    });
  resp.output = output;
  return finish(resp, choice?.finish_reason ?? null, responsesUsage(chat.usage));
}

export interface OutEvent {
  event?: string | undefined;
  data: Json | string;
}

interface OpenItem {
  index: number;
  item: Json;
  kind: 'message' | 'function_call';
  text: string;
  done: boolean;
}

/** Chat chunks in, the Responses event stream out (created … deltas … completed). */
export class ChatToResponsesStream {
  private seq = 0;
  private started = false;
  private readonly resp: Json;
  private readonly items: OpenItem[] = [];
  private message: OpenItem | null = null;
  private readonly calls = new Map<number, OpenItem>();
  private finishReason: string | null = null;
  private usage: Json | null = null;

  constructor(req: Json, agentModel: string) {
    this.resp = responseShell(req, newId('resp_'), nowSeconds(), agentModel);
  }

  private ev(type: string, body: Json): OutEvent {
    return { event: type, data: { type, sequence_number: this.seq++, ...body } };
  }

  private start(out: OutEvent[]): void {
    if (this.started) return;
    this.started = true;
    out.push(this.ev('response.created', { response: { ...this.resp } }));
    out.push(this.ev('response.in_progress', { response: { ...this.resp } }));
  }

  push(chunk: ChatChunk): OutEvent[] {
    const out: OutEvent[] = [];
    this.start(out);
    if (chunk.usage) this.usage = responsesUsage(chunk.usage);
    for (const choice of chunk.choices ?? []) {
      if (choice.index !== 0) continue;
      const d = choice.delta ?? {};
      if (typeof d.content === 'string' && d.content !== '') {
        const m = this.openMessage(out);
        m.text += d.content;
        out.push(
          this.ev('response.output_text.delta', {
            item_id: m.item.id,
            output_index: m.index,
            content_index: 0,
            delta: d.content,
            logprobs: [],
          }),
        );
      }
      for (const tc of d.tool_calls ?? []) {
        let call = this.calls.get(tc.index);
        if (call === undefined) {
          call = {
            index: this.items.length,
            kind: 'function_call',
            text: '',
            done: false,
            item: {
              type: 'function_call',
              id: newId('fc_'),
              call_id: tc.id ?? newId('call_'),
              name: tc.function?.name ?? '',
              arguments: '',
              status: 'in_progress',
            },
          };
          this.calls.set(tc.index, call);
          this.items.push(call);
          out.push(
            this.ev('response.output_item.added', { output_index: call.index, item: { ...call.item } }),
          );
        }
        const args = tc.function?.arguments;
        if (typeof args === 'string' && args !== '') {
          call.text += args;
          out.push(
            this.ev('response.function_call_arguments.delta', {
              item_id: call.item.id,
              output_index: call.index,
              delta: args,
            }),
          );
        }
      }
      if (choice.finish_reason) this.finishReason = choice.finish_reason;
    }
    return out;
  }

  private openMessage(out: OutEvent[]): OpenItem {
    if (this.message !== null && !this.message.done) return this.message;
    const m: OpenItem = {
      index: this.items.length,
      kind: 'message',
      text: '',
      done: false,
      item: { type: 'message', id: newId('msg_'), status: 'in_progress', role: 'assistant', content: [] },
    };
    this.message = m;
    this.items.push(m);
    out.push(this.ev('response.output_item.added', { output_index: m.index, item: { ...m.item } }));
    out.push(
      this.ev('response.content_part.added', {
        item_id: m.item.id,
        output_index: m.index,
        content_index: 0,
        part: { type: 'output_text', text: '', annotations: [] },
      }),
    );
    return m;
  }

  /** The stream ended: close every open item, then `response.completed` (or `incomplete`). */
  end(): OutEvent[] {
    const out: OutEvent[] = [];
    this.start(out);
    const output: Json[] = [];
    for (const it of this.items) {
      if (it.kind === 'message') {
        const part = { type: 'output_text', text: it.text, annotations: [] };
        out.push(
          this.ev('response.output_text.done', {
            item_id: it.item.id,
            output_index: it.index,
            content_index: 0,
            text: it.text,
            logprobs: [],
          }),
        );
        out.push(
          this.ev('response.content_part.done', {
            item_id: it.item.id,
            output_index: it.index,
            content_index: 0,
            part,
          }),
        );
        it.item = { ...it.item, status: 'completed', content: [part] };
      } else {
        out.push(
          this.ev('response.function_call_arguments.done', {
            item_id: it.item.id,
            output_index: it.index,
            arguments: it.text,
          }),
        );
        it.item = { ...it.item, status: 'completed', arguments: it.text };
      }
      it.done = true;
      out.push(this.ev('response.output_item.done', { output_index: it.index, item: it.item }));
      output.push(it.item);
    }
    const final = finish({ ...this.resp, output }, this.finishReason, this.usage);
    out.push(
      this.ev(final.status === 'incomplete' ? 'response.incomplete' : 'response.completed', {
        response: final,
      }),
    );
    return out;
  }
}
