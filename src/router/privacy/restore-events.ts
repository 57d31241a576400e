/**
 * Putting redacted values back into what the agent receives, in the agent's own format: chat
 * chunks, completions chunks, Responses events, Anthropic events, or whole responses. Each text
 * channel of a stream (a choice's content, a tool call's arguments, a content block, an output
 * item) has its own restorer (redact.ts); when a channel ends while holding the start of a
 * possible placeholder, the held text goes out in a delta of its own just before the end.
 */
import type { Api } from '../providers.js';
import { isObject, arr, str, type Json } from '../translate/chat.js';
import type { OutEvent } from '../translate/responses.js';
import type { ChannelRestorer, Restoration } from './redact.js';

export class EventRestorer {
  private readonly channels = new Map<string, ChannelRestorer>();

  constructor(
    private readonly api: Api,
    private readonly restoration: Restoration,
  ) {}

  private channel(key: string, json: boolean): ChannelRestorer {
    let c = this.channels.get(key);
    if (c === undefined) {
      c = this.restoration.channel(json);
      this.channels.set(key, c);
    }
    return c;
  }

  /** Releases a channel's held text (undefined when it held nothing). */
  private release(key: string): string | undefined {
    const c = this.channels.get(key);
    this.channels.delete(key);
    if (c === undefined || !c.holding) return undefined;
    return c.flush();
  }

  /** One event in, the events to send out (the same, restored; sometimes a flush before it). */
  process(ev: OutEvent): OutEvent[] {
    if (typeof ev.data === 'string') return [ev];
    switch (this.api) {
      case 'chat':
      case 'completions':
        return this.chatLike(ev, ev.data);
      case 'responses':
        return this.responses(ev, ev.data);
      case 'messages':
        return this.messages(ev, ev.data);
      default:
        return [ev];
    }
  }

  /** Whatever every channel still holds, for a stream that ends without closing them. */
  end(): OutEvent[] {
    const out: OutEvent[] = [];
    for (const key of [...this.channels.keys()]) {
      const text = this.release(key);
      if (text !== undefined) out.push(...this.flushEvent(key, text));
    }
    return out;
  }

  private chatLike(ev: OutEvent, chunk: Json): OutEvent[] {
    const before: OutEvent[] = [];
    for (const choice of arr(chunk.choices)) {
      if (!isObject(choice)) continue;
      const i = String(choice.index ?? 0);
      if (this.api === 'completions') {
        if (typeof choice.text === 'string') choice.text = this.channel(`t${i}`, false).push(choice.text);
      } else if (isObject(choice.delta)) {
        const d = choice.delta;
        if (typeof d.content === 'string') d.content = this.channel(`c${i}`, false).push(d.content);
        for (const tc of arr(d.tool_calls)) {
          if (!isObject(tc) || !isObject(tc.function) || typeof tc.function.arguments !== 'string') continue;
          tc.function.arguments = this.channel(`a${i}.${String(tc.index ?? 0)}`, true).push(
            tc.function.arguments,
          );
        }
      }
      if (choice.finish_reason !== null && choice.finish_reason !== undefined) {
        for (const key of [...this.channels.keys()]) {
          if (key.slice(1).split('.')[0] !== i) continue;
          const text = this.release(key);
          if (text !== undefined) before.push(...this.flushEvent(key, text, chunk));
        }
      }
    }
    return [...before, ev];
  }

  private responses(ev: OutEvent, data: Json): OutEvent[] {
    const type = str(data.type);
    const id = str(data.item_id) ?? '';
    if (type === 'response.output_text.delta' && typeof data.delta === 'string') {
      data.delta = this.channel(`o${id}:${String(data.content_index ?? 0)}`, false).push(data.delta);
      return [ev];
    }
    if (type === 'response.function_call_arguments.delta' && typeof data.delta === 'string') {
      data.delta = this.channel(`f${id}`, true).push(data.delta);
      return [ev];
    }
    const before: OutEvent[] = [];
    if (type === 'response.output_text.done' || type === 'response.function_call_arguments.done') {
      const key =
        type === 'response.output_text.done' ? `o${id}:${String(data.content_index ?? 0)}` : `f${id}`;
      const text = this.release(key);
      if (text !== undefined) {
        const deltaType =
          key[0] === 'o' ? 'response.output_text.delta' : 'response.function_call_arguments.delta';
        const body: Json = { type: deltaType, item_id: id, output_index: data.output_index, delta: text };
        if (key[0] === 'o') body.content_index = data.content_index ?? 0;
        if (typeof data.sequence_number === 'number') body.sequence_number = data.sequence_number;
        before.push({ event: deltaType, data: body });
      }
      if (typeof data.text === 'string') data.text = this.restoration.restore(data.text);
      if (typeof data.arguments === 'string') data.arguments = this.restoration.restore(data.arguments, true);
      return [...before, ev];
    }
    // Whole items and the whole response: restored at once.
    for (const field of ['item', 'part', 'response'] as const) {
      if (data[field] !== undefined) data[field] = this.restoreWhole(data[field]);
    }
    return [ev];
  }

  private messages(ev: OutEvent, data: Json): OutEvent[] {
    const type = str(data.type);
    const index = String(data.index ?? 0);
    if (type === 'content_block_delta' && isObject(data.delta)) {
      const d = data.delta;
      if (typeof d.text === 'string') d.text = this.channel(`b${index}`, false).push(d.text);
      else if (typeof d.partial_json === 'string')
        d.partial_json = this.channel(`j${index}`, true).push(d.partial_json);
      else if (typeof d.thinking === 'string') d.thinking = this.channel(`k${index}`, false).push(d.thinking);
      return [ev];
    }
    if (type === 'content_block_stop') {
      const before: OutEvent[] = [];
      for (const kind of ['b', 'j', 'k']) {
        const text = this.release(`${kind}${index}`);
        if (text !== undefined) before.push(...this.flushEvent(`${kind}${index}`, text));
      }
      return [...before, ev];
    }
    if (type === 'content_block_start' && data.content_block !== undefined)
      data.content_block = this.restoreWhole(data.content_block);
    return [ev];
  }

  /** A delta event carrying `text` for channel `key`, in the agent's format. */
  private flushEvent(key: string, text: string, like?: Json): OutEvent[] {
    const kind = key[0];
    const rest = key.slice(1);
    if (this.api === 'chat' || this.api === 'completions') {
      const [choice, tool] = rest.split('.');
      const index = Number(choice);
      const base = { id: like?.id, object: like?.object, created: like?.created, model: like?.model };
      if (kind === 't') return [{ data: { ...base, choices: [{ index, text, finish_reason: null }] } }];
      const delta =
        kind === 'c'
          ? { content: text }
          : { tool_calls: [{ index: Number(tool), function: { arguments: text } }] };
      return [{ data: { ...base, choices: [{ index, delta, finish_reason: null }] } }];
    }
    if (this.api === 'messages') {
      const delta =
        kind === 'b'
          ? { type: 'text_delta', text }
          : kind === 'j'
            ? { type: 'input_json_delta', partial_json: text }
            : { type: 'thinking_delta', thinking: text };
      return [
        { event: 'content_block_delta', data: { type: 'content_block_delta', index: Number(rest), delta } },
      ];
    }
    if (this.api === 'responses') {
      const deltaType =
        kind === 'o' ? 'response.output_text.delta' : 'response.function_call_arguments.delta';
      const [item, content] = rest.split(':');
      const body: Json = { type: deltaType, item_id: item, delta: text };
      if (kind === 'o') body.content_index = Number(content ?? 0);
      return [{ event: deltaType, data: body }];
    }
    return [];
  }

  private restoreWhole(value: unknown): unknown {
    // Arguments of function calls are JSON text: restored values are JSON-escaped there.
    const walk = (node: unknown, key: string | null): unknown => {
      if (typeof node === 'string') return this.restoration.restore(node, key === 'arguments');
      if (Array.isArray(node)) return node.map((n) => walk(n, null));
      if (isObject(node)) {
        const out: Json = {};
        for (const [k, v] of Object.entries(node)) out[k] = walk(v, k);
        return out;
      }
      return node;
    };
    return walk(value, null);
  }

  /** A whole (non-streamed) response of the agent's API, restored. */
  static whole(api: Api, body: unknown, restoration: Restoration): unknown {
    if (restoration.empty) return body;
    return new EventRestorer(api, restoration).restoreWhole(body);
  }
}
