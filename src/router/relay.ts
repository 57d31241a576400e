/**
 * The provider's answer on its way to the agent: translated when the call was, redacted values put
 * back, usage and time to first output noted, the key never echoed. A stream goes event by event
 * with backpressure — the next bytes are read from the provider only once the agent has taken the
 * last ones — and is never held whole; only an unfinished event is.
 */
import type { ServerResponse } from 'node:http';
import type { Conversion } from './conversion.js';
import { errorBody, statusOf, type ErrorKind } from './inbound.js';
import { EventRestorer } from './privacy/restore-events.js';
import type { Restoration } from './privacy/redact.js';
import type { Api } from './providers.js';
import { AnswerObserver } from './answer-observer.js';
import { arr, isObject, str, type Json } from './translate/chat.js';
import type { OutEvent } from './translate/responses.js';
import type { UpstreamResponse } from './upstream.js';
import { batches } from './wire/batches.js';
import { formatSse, SseParser, type SseEvent } from './wire/sse.js';

/** Largest non-streamed answer the router reads (it must parse it whole to translate or restore). */
const MAX_RESPONSE_BYTES = 64 * 2 ** 20;
/** Largest error body read from a provider. */
const MAX_ERROR_BYTES = 2 ** 20;

/** Response headers of the provider the agent may see. */
const RESPONSE_HEADERS =
  /^(retry-after|x-request-id|request-id|openai-processing-ms|x-ratelimit-.*|anthropic-ratelimit-.*)$/;

export interface RelayInput {
  res: ServerResponse;
  up: UpstreamResponse;
  api: Api;
  conversion: Conversion;
  restoration: Restoration | null;
  /** The router asked the provider for usage the agent did not ask for: drop that chunk. */
  stripUsage: boolean;
  /** Secrets that must never reach the agent, even echoed by the provider. */
  secrets: readonly string[];
  /** When the request arrived (performance.now()). */
  startedAt: number;
}

export interface RelayOutcome {
  status: number;
  tokensIn: number | undefined;
  tokensOut: number | undefined;
  ttftMs: number | undefined;
  /** Why the answer ended early, if it did. */
  error: string | undefined;
}

/** Replaces each secret in `text` (a provider that echoes the key in an error, say). */
function scrub(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const s of secrets)
    if (s.length >= 8 && out.includes(s)) out = out.split(s).join('[redacted by carapace]');
  return out;
}

async function readLimited(up: UpstreamResponse, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of up.body as AsyncIterable<Buffer>) {
    up.clock.touch();
    size += chunk.length;
    if (size > limit) {
      up.abort();
      throw new Error(`the provider's answer is larger than ${limit / 2 ** 20} MiB`);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

function passHeaders(up: UpstreamResponse): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(up.headers)) {
    if (v !== undefined && RESPONSE_HEADERS.test(k)) out[k] = Array.isArray(v) ? v.join(', ') : v;
  }
  return out;
}

function kindOfStatus(status: number): ErrorKind {
  if (status === 429) return 'budget';
  if (status === 404) return 'not_found';
  if (status === 413) return 'too_large';
  if (status === 401 || status === 403) return 'provider';
  if (status < 500) return 'invalid_request';
  return 'provider';
}

export async function relayResponse(input: RelayInput): Promise<RelayOutcome> {
  const { res, up, api, conversion, secrets } = input;
  const observer = new AnswerObserver(api, input.startedAt);
  const outcome = (status: number, error?: string): RelayOutcome => ({
    status,
    tokensIn: observer.tokensIn,
    tokensOut: observer.tokensOut,
    ttftMs: observer.ttftMs,
    error,
  });
  res.on('close', () => {
    if (!res.writableFinished) up.abort();
  });

  if (up.status >= 400) {
    const raw = scrub((await readLimited(up, MAX_ERROR_BYTES)).toString('utf8'), secrets);
    let message = raw.slice(0, 500);
    try {
      const j = JSON.parse(raw) as Json;
      const e = isObject(j.error) ? j.error : j;
      message = str(e.message) ?? message;
    } catch {
      // not JSON: the text itself
    }
    // The provider's own error, in the agent's format when the call was translated.
    const body =
      conversion.translation === null && /^\s*\{/.test(raw)
        ? raw
        : errorBody(api, kindOfStatus(up.status), `the provider answered ${up.status}: ${message}`);
    res.writeHead(up.status, {
      ...passHeaders(up),
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(body),
    });
    res.end(body);
    return outcome(up.status, `provider answered ${up.status}`);
  }

  const sse = /^text\/event-stream/i.test(String(up.headers['content-type'] ?? ''));
  if (!sse) {
    let body: Json;
    try {
      body = JSON.parse((await readLimited(up, MAX_RESPONSE_BYTES)).toString('utf8')) as Json;
    } catch (err) {
      const message =
        err instanceof SyntaxError
          ? 'the provider answered with something that is not JSON'
          : (err as Error).message;
      const text = errorBody(api, 'provider', message);
      res.writeHead(statusOf('provider'), { 'content-type': 'application/json' });
      res.end(text);
      return outcome(statusOf('provider'), message);
    }
    let out = conversion.response(body);
    if (input.restoration !== null) out = EventRestorer.whole(api, out, input.restoration) as Json;
    observer.whole(out);
    const text = scrub(JSON.stringify(out), secrets);
    res.writeHead(up.status, {
      ...passHeaders(up),
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(text),
    });
    res.end(text);
    return outcome(up.status);
  }

  res.writeHead(up.status, {
    ...passHeaders(up),
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache',
  });
  res.flushHeaders();
  const converter = conversion.stream();
  const restorer =
    input.restoration !== null && !input.restoration.empty ? new EventRestorer(api, input.restoration) : null;
  const parser = new SseParser();

  const write = async (text: string | Buffer): Promise<void> => {
    if (res.destroyed) throw new Error('the agent went away');
    if (res.write(text)) return;
    up.clock.pause();
    await new Promise<void>((resolve, reject) => {
      const done = (): void => {
        res.off('drain', done);
        res.off('close', closed);
        resolve();
      };
      const closed = (): void => {
        res.off('drain', done);
        reject(new Error('the agent went away'));
      };
      res.once('drain', done);
      res.once('close', closed);
    });
    up.clock.resume();
  };

  const usageOnly = (data: Json): boolean =>
    input.stripUsage && isObject(data.usage) && arr(data.choices).length === 0;

  /** An event in the agent's format: restored, observed; its wire text. */
  const emit = (ev: OutEvent): string => {
    const events = restorer !== null ? restorer.process(ev) : [ev];
    let text = '';
    for (const e of events) {
      if (typeof e.data === 'string') {
        if (e.data === '[DONE]' && restorer !== null) for (const f of restorer.end()) text += serialize(f);
      } else {
        observer.event(e.data);
        if (usageOnly(e.data)) continue;
      }
      text += serialize(e);
    }
    return text;
  };

  /**
   * A provider event that passes through: as received unless something must look inside it
   * (values to restore, usage to count, the first output to time).
   */
  const passEvent = (ev: SseEvent): string => {
    const look = restorer !== null || observer.ttftMs === undefined || ev.raw.includes('"usage"');
    if (!look || ev.data === '[DONE]') {
      let text = '';
      if (ev.data === '[DONE]' && restorer !== null) for (const f of restorer.end()) text += serialize(f);
      return `${text}${ev.raw}\n\n`;
    }
    let data: Json;
    try {
      data = JSON.parse(ev.data) as Json;
    } catch {
      return `${ev.raw}\n\n`;
    }
    if (restorer !== null) return emit({ event: ev.event, data });
    observer.event(data);
    return usageOnly(data) ? '' : `${ev.raw}\n\n`;
  };

  const convert = (ev: SseEvent): string => {
    if (converter === null) return passEvent(ev);
    let text = '';
    for (const out of converter.push(ev)) text += emit(out);
    return text;
  };

  try {
    // One write per batch: everything the provider's socket has delivered since the last one (a
    // single event when it streams slowly, many when it is fast), so a fast stream costs one write
    // per batch on every hop after this one, and the first event is never held back.
    // Raw bytes of an event not yet complete, held by the fast path below (the parser holds
    // nothing meanwhile).
    let raw: Buffer | null = null;
    for await (const chunk of batches(up.body)) {
      up.clock.touch();
      // The common case of a pass-through after the first output: whole events with nothing to
      // count or restore go out as they came, up to the last complete one.
      if (converter === null && restorer === null && observer.ttftMs !== undefined && parser.idle) {
        const bytes: Buffer = raw === null ? chunk : Buffer.concat([raw, chunk]);
        if (!bytes.includes('"usage"') && !bytes.includes(0x0d)) {
          const cut: number = bytes.lastIndexOf('\n\n');
          raw = cut + 2 < bytes.length ? bytes.subarray(cut + 2) : null;
          if (cut >= 0) await write(bytes.subarray(0, cut + 2));
          continue;
        }
        raw = null;
        let text = '';
        for (const ev of parser.push(bytes)) text += convert(ev);
        if (text !== '') await write(text);
        continue;
      }
      let text = '';
      for (const ev of parser.push(chunk)) text += convert(ev);
      if (text !== '') await write(text);
    }
    if (raw !== null) parser.push(raw);
    let text = '';
    for (const ev of parser.end()) text += convert(ev);
    if (converter !== null) for (const ev of converter.end()) text += emit(ev);
    if (restorer !== null) for (const f of restorer.end()) text += serialize(f);
    if (text !== '') await write(text);
    res.end();
    return outcome(up.status);
  } catch (err) {
    // Mid-stream: nothing sensible can be sent any more; the agent sees the stream break.
    up.abort();
    res.destroy();
    return outcome(up.status, (err as Error).message);
  }
}

function serialize(e: OutEvent): string {
  return formatSse(e.event, typeof e.data === 'string' ? e.data : JSON.stringify(e.data));
}
