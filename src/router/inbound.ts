/**
 * What an agent sends to inference.local and what it gets back when the router itself answers:
 * which API a path is, the request body (read whole, within a limit: it must be classified and
 * rewritten before anything leaves), and errors in the shape the agent's SDK expects (OpenAI's
 * `{error:{…}}` or Anthropic's `{type:"error",error:{…}}`).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Api } from './providers.js';

/** Largest request body the router takes (prompts with images included). */
export const MAX_REQUEST_BYTES = 32 * 2 ** 20;

const PATHS: Record<string, Api> = {
  '/v1/chat/completions': 'chat',
  '/v1/completions': 'completions',
  '/v1/responses': 'responses',
  '/v1/embeddings': 'embeddings',
  '/v1/messages': 'messages',
  '/v1/models': 'models',
};

/** The API a request path names, or null. A doubled `/v1/v1/` (a base URL that ends in /v1 given to
 * a client that adds its own) is read as one. */
export function apiOfPath(rawPath: string): Api | null {
  let path = rawPath.split('?')[0] ?? '';
  if (path.startsWith('http://') || path.startsWith('https://')) path = new URL(path).pathname;
  path = path.replace(/\/+$/, '');
  if (path.startsWith('/v1/v1/')) path = path.slice(3);
  return PATHS[path] ?? null;
}

export class RequestTooLarge extends Error {
  override name = 'RequestTooLarge';
}

/** The whole request body, or RequestTooLarge past the limit. */
export async function readBody(req: IncomingMessage, limit = MAX_REQUEST_BYTES): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) throw new RequestTooLarge(`the request body is larger than ${limit / 2 ** 20} MiB`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

export type ErrorKind =
  | 'invalid_request'
  | 'not_found'
  | 'too_large'
  | 'denied'
  | 'not_allowed'
  | 'budget'
  | 'provider'
  | 'unavailable'
  | 'timeout';

const STATUS: Record<ErrorKind, number> = {
  invalid_request: 400,
  not_found: 404,
  too_large: 413,
  denied: 403,
  not_allowed: 403,
  budget: 429,
  provider: 502,
  unavailable: 503,
  timeout: 504,
};

const ANTHROPIC_TYPE: Record<ErrorKind, string> = {
  invalid_request: 'invalid_request_error',
  not_found: 'not_found_error',
  too_large: 'request_too_large',
  denied: 'permission_error',
  not_allowed: 'permission_error',
  budget: 'rate_limit_error',
  provider: 'api_error',
  unavailable: 'overloaded_error',
  timeout: 'api_error',
};

const OPENAI: Record<ErrorKind, { type: string; code: string }> = {
  invalid_request: { type: 'invalid_request_error', code: 'invalid_request' },
  not_found: { type: 'invalid_request_error', code: 'not_found' },
  too_large: { type: 'invalid_request_error', code: 'request_too_large' },
  denied: { type: 'permission_error', code: 'privacy_rule_denied' },
  not_allowed: { type: 'permission_error', code: 'inference_not_allowed' },
  budget: { type: 'rate_limit_error', code: 'budget_exhausted' },
  provider: { type: 'api_error', code: 'provider_error' },
  unavailable: { type: 'api_error', code: 'route_unavailable' },
  timeout: { type: 'api_error', code: 'timeout' },
};

export function statusOf(kind: ErrorKind): number {
  return STATUS[kind];
}

/** The error body in the agent's API's shape. */
export function errorBody(api: Api | null, kind: ErrorKind, message: string): string {
  const full = `carapace router: ${message}`;
  if (api === 'messages')
    return JSON.stringify({ type: 'error', error: { type: ANTHROPIC_TYPE[kind], message: full } });
  return JSON.stringify({
    error: { message: full, type: OPENAI[kind].type, code: OPENAI[kind].code, param: null },
  });
}

/** Answers with an error (nothing was sent yet). */
export function sendError(
  res: ServerResponse,
  api: Api | null,
  kind: ErrorKind,
  message: string,
  headers: Record<string, string> = {},
): number {
  const status = STATUS[kind];
  if (res.headersSent) {
    res.destroy();
    return status;
  }
  const body = errorBody(api, kind, message);
  res.writeHead(status, {
    ...headers,
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
  });
  res.end(body);
  return status;
}

/**
 * The longest `retry-after` the OpenAI SDKs wait for: past it they retry after their own short
 * backoff (0.5–8 s) instead. Anthropic's SDKs wait for any positive value, however long.
 */
export const SDK_RETRY_AFTER_MAX_S = 60;

/**
 * The headers of a 429 for a spent budget that frees in `freesInMs` (null: never). The OpenAI and
 * Anthropic SDKs (JS and Python) retry a 429 on their own, twice by default, and obey
 * `x-should-retry` before anything else. A budget that frees within a minute gets `retry-after`
 * and the retry succeeds; one that frees later gets `retry-after` too (for clients that schedule)
 * and `x-should-retry: false`, so that an SDK does not spend its retries at once (OpenAI's) or
 * hang the agent's call until the next day (Anthropic's) but gives the agent the error to show.
 */
export function budgetRetryHeaders(freesInMs: number | null): Record<string, string> {
  if (freesInMs === null) return { 'x-should-retry': 'false' };
  const seconds = Math.max(1, Math.ceil(freesInMs / 1000));
  return seconds <= SDK_RETRY_AFTER_MAX_S
    ? { 'retry-after': String(seconds) }
    : { 'retry-after': String(seconds), 'x-should-retry': 'false' };
}

/** `3h 20m`, `12m 5s`, `40s`: how long until a budget frees, for the agent's error message. */
export function waitText(ms: number): string {
  const s = Math.max(1, Math.ceil(ms / 1000));
  const [h, m, sec] = [Math.floor(s / 3600), Math.floor((s % 3600) / 60), s % 60];
  if (h > 0) return m > 0 ? `${h}h ${m}m` : `${h}h`;
  if (m > 0) return sec > 0 ? `${m}m ${sec}s` : `${m}m`;
  return `${sec}s`;
}

/**
 * `GET /v1/models`: the routes and aliases (`RouteTable.advertised`; none without an inference
 * section), in Anthropic's list shape when the request carries `anthropic-version`, else OpenAI's.
 */
export function sendModels(req: IncomingMessage, res: ServerResponse, ids: readonly string[]): void {
  const created = Math.floor(Date.now() / 1000);
  const anthropic = typeof req.headers['anthropic-version'] === 'string';
  const body = anthropic
    ? {
        data: ids.map((id) => ({
          type: 'model',
          id,
          display_name: id,
          created_at: new Date(created * 1000).toISOString(),
        })),
        has_more: false,
        first_id: ids[0] ?? null,
        last_id: ids[ids.length - 1] ?? null,
      }
    : { object: 'list', data: ids.map((id) => ({ id, object: 'model', created, owned_by: 'carapace' })) };
  const text = JSON.stringify(body);
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}
