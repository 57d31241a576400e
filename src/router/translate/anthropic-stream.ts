/**
 * Anthropic Messages ↔ Chat Completions streams, event by event: chat chunks as Anthropic's event
 * sequence (message_start … content blocks … message_stop) for an agent that speaks Messages, and
 * Anthropic's events as chat chunks for an agent that speaks chat. Requests and whole answers are
 * in anthropic.ts, with the stop reasons and usage both directions share.
 */
import { FINISH_TO_STOP, STOP_TO_FINISH, anthropicUsage, usageFromAnthropic } from './anthropic.js';
import { isObject, newId, nowSeconds, num, str, type ChatChunk, type ChatUsage, type Json } from './chat.js';
import type { OutEvent } from './responses.js';

/** Chat chunks in, Anthropic's event stream out (message_start … content blocks … message_stop). */
export class ChatToMessagesStream {
  private started = false;
  private readonly id = newId('msg_');
  private block: { index: number; kind: 'text' | 'tool'; tool: number } | null = null;
  private blocks = 0;
  private stop: string | null = null;
  private usage: ChatUsage | null = null;

  constructor(private readonly agentModel: string) {}

  private start(out: OutEvent[]): void {
    if (this.started) return;
    this.started = true;
    out.push({
      event: 'message_start',
      data: {
        type: 'message_start',
        message: {
          id: this.id,
          type: 'message',
          role: 'assistant',
          model: this.agentModel,
          content: [],
          stop_reason: null,
          stop_sequence: null,
          usage: { input_tokens: 0, output_tokens: 0 },
        },
      },
    });
  }

  private close(out: OutEvent[]): void {
    if (this.block === null) return;
    out.push({ event: 'content_block_stop', data: { type: 'content_block_stop', index: this.block.index } });
    this.block = null;
  }

  push(chunk: ChatChunk): OutEvent[] {
    const out: OutEvent[] = [];
    this.start(out);
    if (chunk.usage) this.usage = chunk.usage;
    for (const choice of chunk.choices ?? []) {
      if (choice.index !== 0) continue;
      const d = choice.delta ?? {};
      if (typeof d.content === 'string' && d.content !== '') {
        if (this.block?.kind !== 'text') {
          this.close(out);
          this.block = { index: this.blocks++, kind: 'text', tool: -1 };
          out.push({
            event: 'content_block_start',
            data: {
              type: 'content_block_start',
              index: this.block.index,
              content_block: { type: 'text', text: '' },
            },
          });
        }
        out.push({
          event: 'content_block_delta',
          data: {
            type: 'content_block_delta',
            index: this.block.index,
            delta: { type: 'text_delta', text: d.content },
          },
        });
      }
      for (const tc of d.tool_calls ?? []) {
        if (this.block?.kind !== 'tool' || this.block.tool !== tc.index) {
          this.close(out);
          this.block = { index: this.blocks++, kind: 'tool', tool: tc.index };
          out.push({
            event: 'content_block_start',
            data: {
              type: 'content_block_start',
              index: this.block.index,
              content_block: {
                type: 'tool_use',
                id: tc.id ?? newId('toolu_'),
                name: tc.function?.name ?? '',
                input: {},
              },
            },
          });
        }
        const args = tc.function?.arguments;
        if (typeof args === 'string' && args !== '')
          out.push({
            event: 'content_block_delta',
            data: {
              type: 'content_block_delta',
              index: this.block.index,
              delta: { type: 'input_json_delta', partial_json: args },
            },
          });
      }
      if (choice.finish_reason) {
        this.stop = FINISH_TO_STOP[choice.finish_reason] ?? 'end_turn';
        this.close(out);
      }
    }
    return out;
  }

  end(): OutEvent[] {
    const out: OutEvent[] = [];
    this.start(out);
    this.close(out);
    out.push({
      event: 'message_delta',
      data: {
        type: 'message_delta',
        delta: { stop_reason: this.stop ?? 'end_turn', stop_sequence: null },
        usage: anthropicUsage(this.usage),
      },
    });
    out.push({ event: 'message_stop', data: { type: 'message_stop' } });
    return out;
  }
}

/** Thrown for an `error` event inside an Anthropic stream. */
export class ProviderStreamError extends Error {
  override name = 'ProviderStreamError';
}

/** Anthropic's event stream in, chat chunks out (the usage as a last chunk without choices). */
export class AnthropicToChatStream {
  private readonly id = newId('chatcmpl-');
  private readonly created = nowSeconds();
  private usage: Json = {};
  private tools = 0;
  private readonly toolOfBlock = new Map<number, number>();
  private sentRole = false;

  constructor(private readonly agentModel: string) {}

  private chunk(delta: ChatChunk['choices'][number]['delta'], finish: string | null = null): ChatChunk {
    if (!this.sentRole) {
      delta = { role: 'assistant', ...delta };
      this.sentRole = true;
    }
    return {
      id: this.id,
      object: 'chat.completion.chunk',
      created: this.created,
      model: this.agentModel,
      choices: [{ index: 0, delta, finish_reason: finish }],
    };
  }

  push(type: string | undefined, data: Json): ChatChunk[] {
    const kind = str(data.type) ?? type;
    switch (kind) {
      case 'message_start': {
        const msg = isObject(data.message) ? data.message : {};
        this.usage = { ...(isObject(msg.usage) ? msg.usage : {}) };
        return [this.chunk({ content: '' })];
      }
      case 'content_block_start': {
        const block = isObject(data.content_block) ? data.content_block : {};
        if (block.type !== 'tool_use') return [];
        const tool = this.tools++;
        this.toolOfBlock.set(num(data.index) ?? -1, tool);
        return [
          this.chunk({
            tool_calls: [
              {
                index: tool,
                id: str(block.id) ?? newId('call_'),
                type: 'function',
                function: { name: str(block.name) ?? '', arguments: '' },
              },
            ],
          }),
        ];
      }
      case 'content_block_delta': {
        const delta = isObject(data.delta) ? data.delta : {};
        if (delta.type === 'text_delta') return [this.chunk({ content: str(delta.text) ?? '' })];
        if (delta.type === 'input_json_delta') {
          const tool = this.toolOfBlock.get(num(data.index) ?? -1);
          if (tool === undefined) return [];
          return [
            this.chunk({
              tool_calls: [{ index: tool, function: { arguments: str(delta.partial_json) ?? '' } }],
            }),
          ];
        }
        return []; // thinking and signatures: chat has no standard place for them
      }
      case 'message_delta': {
        if (isObject(data.usage)) Object.assign(this.usage, data.usage);
        const delta = isObject(data.delta) ? data.delta : {};
        const reason = str(delta.stop_reason);
        return reason === undefined ? [] : [this.chunk({}, STOP_TO_FINISH[reason] ?? 'stop')];
      }
      case 'message_stop':
        return [
          {
            id: this.id,
            object: 'chat.completion.chunk',
            created: this.created,
            model: this.agentModel,
            choices: [],
            usage: usageFromAnthropic(this.usage),
          },
        ];
      case 'error': {
        const err = isObject(data.error) ? data.error : {};
        throw new ProviderStreamError(
          `the provider ended the stream with an error: ${str(err.message) ?? 'unknown'}`,
        );
      }
      default:
        return []; // ping, content_block_stop
    }
  }
}
