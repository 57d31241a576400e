/**
 * Redaction: what a `redact` rule found is replaced by a placeholder before the request leaves the
 * host, and the placeholder is put back in the response the agent receives, streamed or not.
 *
 * Placeholders are `[LABEL_XXXXXXXX]`, XXXXXXXX the first 32 bits of an HMAC of the value under a
 * key that lives in this process only: the same value gets the same placeholder in every request
 * (a conversation replayed turn after turn stays consistent for the model), and the placeholder
 * reveals nothing of the value. Only placeholders this request produced are restored: a model
 * inventing `[EMAIL_00000000]` gets it back as written.
 *
 * Streams: a placeholder may arrive split across events (`[EMA` + `IL_3F2A9C1B]`). Each text
 * channel (a choice's content, a tool call's arguments, a content block) holds back a trailing
 * piece that could still become a placeholder, and releases it with the next delta or when the
 * channel ends. Arguments of tool calls are JSON text: a value restored there is JSON-escaped.
 */
import { createHmac } from 'node:crypto';
import type { ContentString, Hit } from './classify.js';

/** Longest placeholder: `[` + label (≤ 24) + `_` + 8 hex + `]`. */
const MAX_PLACEHOLDER = 1 + 24 + 1 + 8 + 1;

export class Redactor {
  constructor(private readonly key: Buffer) {}

  placeholder(label: string, value: string): string {
    const mac = createHmac('sha256', this.key).update(label).update('\0').update(value).digest('hex');
    return `[${label}_${mac.slice(0, 8).toUpperCase()}]`;
  }

  /**
   * Replaces, in each string, the hits of the given rules with placeholders. Returns how many
   * values were replaced and the restoration for the response.
   */
  redact(
    strings: readonly ContentString[],
    hits: readonly Hit[][],
    redactRules: ReadonlySet<unknown>,
  ): Restoration {
    const restoration = new Restoration();
    strings.forEach((s, i) => {
      const mine = (hits[i] ?? []).filter((h) => redactRules.has(h.rule)).sort((a, b) => a.start - b.start);
      if (mine.length === 0) return;
      let out = '';
      let at = 0;
      for (let k = 0; k < mine.length; k++) {
        const h = mine[k] as Hit;
        let end = h.end;
        // Overlapping finds (a key inside a private-key block) become one placeholder.
        while (k + 1 < mine.length && (mine[k + 1] as Hit).start < end)
          end = Math.max(end, (mine[++k] as Hit).end);
        if (h.start < at) continue;
        const value = s.value.slice(h.start, end);
        const ph = this.placeholder(h.label, value);
        restoration.add(ph, value);
        out += s.value.slice(at, h.start) + ph;
        at = end;
      }
      s.set(out + s.value.slice(at));
    });
    return restoration;
  }
}

/** The placeholders of one request and their values. */
export class Restoration {
  private readonly values = new Map<string, string>();
  count = 0;

  add(placeholder: string, value: string): void {
    this.count++;
    this.values.set(placeholder, value);
  }

  get empty(): boolean {
    return this.values.size === 0;
  }

  /** `text` with every placeholder of this request replaced by its value (JSON-escaped for `json`). */
  restore(text: string, json = false): string {
    if (this.values.size === 0) return text;
    let at = text.indexOf('[');
    if (at < 0) return text;
    let out = '';
    let from = 0;
    while (at >= 0) {
      const close = text.indexOf(']', at + 1);
      if (close < 0) break;
      if (close - at + 1 <= MAX_PLACEHOLDER) {
        const value = this.values.get(text.slice(at, close + 1));
        if (value !== undefined) {
          out += text.slice(from, at) + (json ? JSON.stringify(value).slice(1, -1) : value);
          from = close + 1;
          at = text.indexOf('[', from);
          continue;
        }
      }
      at = text.indexOf('[', at + 1);
    }
    return from === 0 ? text : out + text.slice(from);
  }

  /** Every string inside a JSON value restored (a tool's input object, a whole response). */
  restoreDeep<T>(value: T): T {
    if (this.values.size === 0) return value;
    const walk = (node: unknown): unknown => {
      if (typeof node === 'string') return this.restore(node);
      if (Array.isArray(node)) return node.map(walk);
      if (typeof node === 'object' && node !== null) {
        const out: Record<string, unknown> = {};
        for (const [k, v] of Object.entries(node)) out[k] = walk(v);
        return out;
      }
      return node;
    };
    return walk(value) as T;
  }

  /** A restorer for one streamed text channel. */
  channel(json: boolean): ChannelRestorer {
    return new ChannelRestorer(this, json);
  }
}

/** One streamed text channel: deltas in, restored text out, a possible placeholder held back. */
export class ChannelRestorer {
  private held = '';

  constructor(
    private readonly restoration: Restoration,
    private readonly json: boolean,
  ) {}

  push(delta: string): string {
    const text = this.held + delta;
    const cut = partialPlaceholderStart(text);
    this.held = text.slice(cut);
    return this.restoration.restore(text.slice(0, cut), this.json);
  }

  /** What is still held (the channel ended): released as it is, restored if it is whole. */
  flush(): string {
    const rest = this.held;
    this.held = '';
    return this.restoration.restore(rest, this.json);
  }

  get holding(): boolean {
    return this.held.length > 0;
  }
}

/** Where a trailing piece that could still grow into a placeholder starts (text.length if none). */
function partialPlaceholderStart(text: string): number {
  const from = Math.max(0, text.length - MAX_PLACEHOLDER);
  const at = text.lastIndexOf('[');
  if (at < from) return text.length;
  for (let i = at + 1; i < text.length; i++) {
    const c = text.charCodeAt(i);
    const ok = (c >= 65 && c <= 90) || (c >= 48 && c <= 57) || c === 95;
    if (!ok) return text.length;
  }
  return at;
}
