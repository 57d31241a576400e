/**
 * The gateway's HTTP server: JSON over Unix sockets. Each connection arrives through a listener
 * that decided who the caller is (sockets.ts); the request itself never names a user. Requests
 * are validated against the route's schemas before a handler runs; every failure is one JSON error
 * with a stable code. Bodies are bounded, so a client cannot make the gateway buffer without end.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { ApiError, toApiError, type ApiErrorBody } from './errors.js';
import { findRoute, parsePart, type Caller, type Route } from './router.js';

/** Request bodies are small JSON documents (a policy is the largest): 4 MiB is plenty. */
export const MAX_BODY_BYTES = 4 * 2 ** 20;

export interface UpgradedStream {
  socket: Duplex;
  head: Buffer;
}

/** One answered request, for the gateway's log (never its body: a policy or a credential). */
export interface ApiRequestRecord {
  method: string;
  path: string;
  uid: number | null;
  status: number;
  ms: number;
}

export interface ApiServerOptions {
  /** Where failures that are the gateway's own (not the caller's) are reported. */
  onInternalError?: (err: unknown, req: IncomingMessage) => void;
  /** Every request once answered (or its stream ended). */
  onResponse?: (record: ApiRequestRecord) => void;
}

export class ApiServer {
  readonly http: Server;
  private readonly callers = new WeakMap<object, Caller>();

  constructor(
    private routes: readonly Route[],
    private readonly opts: ApiServerOptions = {},
  ) {
    this.http = createServer({ requestTimeout: 0, keepAliveTimeout: 30_000 }, (req, res) => {
      void this.handle(req, res);
    });
    this.http.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      void this.handleUpgrade(req, socket, head);
    });
    this.http.on('clientError', (_err, socket: Duplex) => socket.destroy());
  }

  /** Replaces the routes (once they can be made: they may need to know where the server listens). */
  setRoutes(routes: readonly Route[]): void {
    this.routes = routes;
  }

  /** Serves one accepted connection as `caller`. */
  accept(socket: Socket, caller: Caller): void {
    this.callers.set(socket, caller);
    this.http.emit('connection', socket);
  }

  private callerOf(req: IncomingMessage): Caller {
    const caller = this.callers.get(req.socket);
    if (!caller) throw new ApiError('UNAUTHENTICATED', 'connection of unknown origin');
    return caller;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = performance.now();
    res.once('close', () =>
      this.opts.onResponse?.({
        method: req.method ?? 'GET',
        path: new URL(req.url ?? '/', 'http://gateway').pathname,
        uid: this.callers.get(req.socket)?.uid ?? null,
        status: res.statusCode,
        ms: Math.round(performance.now() - started),
      }),
    );
    try {
      const caller = this.callerOf(req);
      const url = new URL(req.url ?? '/', 'http://gateway');
      const { route, raw } = findRoute(this.routes, req.method ?? 'GET', url.pathname);
      if (route.stream === 'upgrade')
        throw new ApiError('INVALID_INPUT', `${route.path} needs an Upgrade request`);
      const body = route.body ? await readJsonBody(req) : undefined;
      const result = await route.handler({
        caller,
        params: parsePart(route.params, raw, 'path'),
        query: parsePart(route.query, queryObject(url.searchParams), 'query'),
        body: parsePart(route.body, body, 'body'),
        req,
        res,
      });
      if (isStreamed(result)) return;
      const [status, payload] = hasStatus(result) ? [result.status, result.body] : [200, result];
      sendJson(res, status, payload);
    } catch (err) {
      this.fail(err, req, res);
    }
  }

  private async handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    // The caller may leave at any moment, and a write to its socket then fails (EPIPE before the
    // 101, write-after-end once it hung up): unheard, that 'error' would end the gateway. 'close'
    // follows every error and is what the routes act on.
    socket.on('error', () => {});
    try {
      const caller = this.callerOf(req);
      const url = new URL(req.url ?? '/', 'http://gateway');
      const { route, raw } = findRoute(this.routes, req.method ?? 'GET', url.pathname);
      if (route.stream !== 'upgrade') throw new ApiError('INVALID_INPUT', `${route.path} does not upgrade`);
      const query = parsePart(route.query, queryObject(url.searchParams), 'query');
      await route.handler({
        caller,
        params: parsePart(route.params, raw, 'path'),
        query,
        body: { socket, head } satisfies UpgradedStream,
        req,
        res: undefined as unknown as ServerResponse,
      });
    } catch (err) {
      const e = toApiError(err);
      if (e.code === 'INTERNAL') this.opts.onInternalError?.(err, req);
      const text = JSON.stringify(errorBody(e));
      socket.end(
        `HTTP/1.1 ${e.status} ${statusText(e.status)}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(text)}\r\nConnection: close\r\n\r\n${text}`,
      );
    }
  }

  private fail(err: unknown, req: IncomingMessage, res: ServerResponse): void {
    const e = toApiError(err);
    if (e.code === 'INTERNAL') this.opts.onInternalError?.(err, req);
    if (res.headersSent) {
      res.destroy();
      return;
    }
    sendJson(res, e.status, errorBody(e));
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.http.close(() => resolve());
      this.http.closeAllConnections();
    });
  }
}

function errorBody(e: ApiError): ApiErrorBody {
  return {
    error: { code: e.code, message: e.message, ...(e.details !== undefined ? { details: e.details } : {}) },
  };
}

const isStreamed = (r: unknown): r is { streamed: true } =>
  typeof r === 'object' && r !== null && (r as { streamed?: unknown }).streamed === true;
const hasStatus = (r: unknown): r is { status: number; body: unknown } =>
  typeof r === 'object' &&
  r !== null &&
  typeof (r as { status?: unknown }).status === 'number' &&
  'body' in r;

/** A handler's answer that is already JSON text (put together from parts kept serialized). */
export class JsonText {
  constructor(readonly text: string) {}
}

export function sendJson(res: ServerResponse, status: number, payload: unknown): void {
  const text = payload instanceof JsonText ? payload.text : JSON.stringify(payload ?? null);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

function statusText(status: number): string {
  return (
    {
      400: 'Bad Request',
      401: 'Unauthorized',
      403: 'Forbidden',
      404: 'Not Found',
      405: 'Method Not Allowed',
      409: 'Conflict',
    }[status] ?? 'Error'
  );
}

/** Query parameters: a repeated name becomes an array, a single one a string. */
function queryObject(params: URLSearchParams): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const key of new Set(params.keys())) {
    const all = params.getAll(key);
    out[key] = all.length === 1 ? all[0]! : all;
  }
  return out;
}

async function readJsonBody(req: IncomingMessage): Promise<unknown> {
  const type = req.headers['content-type'] ?? '';
  if (!/^application\/json\b/i.test(type))
    throw new ApiError('UNSUPPORTED_MEDIA_TYPE', 'send the request body as application/json');
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES)
      throw new ApiError('PAYLOAD_TOO_LARGE', `request body over ${MAX_BODY_BYTES} bytes`);
    chunks.push(chunk);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw new ApiError('INVALID_INPUT', 'the request body is not valid JSON');
  }
}
