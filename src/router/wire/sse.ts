/**
 * Server-sent events, read incrementally: bytes in as they arrive, whole events out, nothing held
 * but the incomplete event at the end. A split UTF-8 sequence or an event split across reads is
 * kept for the next read, never mangled.
 */
import { StringDecoder } from 'node:string_decoder';

export interface SseEvent {
  /** The `event:` field, when present. */
  event: string | undefined;
  /** The `data:` lines joined with `\n`. */
  data: string;
  /** The event as received (without its terminating blank line), for passthrough. */
  raw: string;
}

export class SseParser {
  private readonly decoder = new StringDecoder('utf8');
  private buf = '';
  /** The decoder holds no partial character (the last bytes pushed ended a line). */
  private decoderClean = true;

  /** Every event completed by `chunk`. */
  push(chunk: Buffer | string): SseEvent[] {
    if (typeof chunk !== 'string') this.decoderClean = chunk.length > 0 && chunk[chunk.length - 1] === 0x0a;
    let text = typeof chunk === 'string' ? chunk : this.decoder.write(chunk);
    if (text.includes('\r')) text = text.replace(/\r\n?/g, '\n');
    this.buf = this.buf.length === 0 ? text : this.buf + text;
    const out: SseEvent[] = [];
    let from = 0;
    for (;;) {
      const end = this.buf.indexOf('\n\n', from);
      if (end < 0) break;
      const raw = this.buf.slice(from, end);
      from = end + 2;
      const ev = parseEvent(raw);
      if (ev !== null) out.push(ev);
    }
    if (from > 0) this.buf = this.buf.slice(from);
    return out;
  }

  /** The last event when the stream ended without a blank line after it. */
  end(): SseEvent[] {
    const rest = this.buf + this.decoder.end();
    this.buf = '';
    const ev = rest.trim() === '' ? null : parseEvent(rest.replace(/\n+$/, ''));
    return ev === null ? [] : [ev];
  }

  /** Nothing is held: a read that is whole events may bypass the parser. */
  get idle(): boolean {
    return this.buf.length === 0 && this.decoderClean;
  }
}

function parseEvent(raw: string): SseEvent | null {
  let event: string | undefined;
  let data: string | null = null;
  let start = 0;
  while (start <= raw.length) {
    let nl = raw.indexOf('\n', start);
    if (nl < 0) nl = raw.length;
    const line = raw.slice(start, nl);
    start = nl + 1;
    if (line === '' || line.charCodeAt(0) === 0x3a) continue; // a comment (":")
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.charCodeAt(0) === 0x20) value = value.slice(1);
    if (field === 'data') data = data === null ? value : data + '\n' + value;
    else if (field === 'event') event = value;
  }
  if (data === null && event === undefined) return null;
  return { event, data: data ?? '', raw };
}

/** One event in wire form, ending with its blank line. */
export function formatSse(event: string | undefined, data: string): string {
  const lines = data.includes('\n')
    ? data
        .split('\n')
        .map((l) => `data: ${l}`)
        .join('\n')
    : `data: ${data}`;
  return event === undefined ? `${lines}\n\n` : `event: ${event}\n${lines}\n\n`;
}
