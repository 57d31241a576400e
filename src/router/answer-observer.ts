/**
 * What the router learns of an answer on its way to the agent, in the agent's format: the tokens
 * it used (as the provider counted them) and the time to its first output (text, a tool call or
 * reasoning), for usage, budgets and the audit. It only reads; the relay decides what is sent.
 */
import type { Api } from './providers.js';
import { arr, isObject, num, str, type Json } from './translate/chat.js';

export class AnswerObserver {
  tokensIn: number | undefined;
  tokensOut: number | undefined;
  ttftMs: number | undefined;

  constructor(
    private readonly api: Api,
    private readonly startedAt: number,
  ) {}

  /** The first output, text or otherwise: the time to it is the answer's time to first token. */
  private output(): void {
    if (this.ttftMs === undefined) this.ttftMs = performance.now() - this.startedAt;
  }

  /** Usage of a whole answer in the agent's format. */
  whole(body: Json): void {
    this.usage(body.usage);
    this.output();
  }

  private usage(u: unknown): void {
    if (!isObject(u)) return;
    const input =
      num(u.prompt_tokens) ??
      (num(u.input_tokens) !== undefined
        ? (num(u.input_tokens) ?? 0) +
          (num(u.cache_read_input_tokens) ?? 0) +
          (num(u.cache_creation_input_tokens) ?? 0)
        : undefined);
    const output = num(u.completion_tokens) ?? num(u.output_tokens);
    if (input !== undefined && (input > 0 || this.tokensIn === undefined)) this.tokensIn = input;
    if (output !== undefined) this.tokensOut = output;
  }

  /** One streamed event in the agent's format. */
  event(data: Json): void {
    switch (this.api) {
      case 'chat':
      case 'completions':
        this.usage(data.usage);
        for (const c of arr(data.choices)) {
          if (!isObject(c)) continue;
          const d = isObject(c.delta) ? c.delta : {};
          if (
            (typeof c.text === 'string' && c.text !== '') ||
            (typeof d.content === 'string' && d.content !== '')
          )
            this.output();
          else if (
            arr(d.tool_calls).length > 0 ||
            (typeof d.reasoning_content === 'string' && d.reasoning_content !== '')
          )
            this.output();
        }
        return;
      case 'responses': {
        const type = str(data.type) ?? '';
        if (type.endsWith('.delta')) this.output();
        if (type === 'response.completed' || type === 'response.incomplete')
          this.usage(isObject(data.response) ? data.response.usage : undefined);
        return;
      }
      case 'messages': {
        const type = str(data.type);
        if (type === 'content_block_delta') this.output();
        if (type === 'message_start' && isObject(data.message)) this.usage(data.message.usage);
        if (type === 'message_delta') this.usage(data.usage);
        return;
      }
      default:
        return;
    }
  }
}
