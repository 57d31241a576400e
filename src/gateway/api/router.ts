/**
 * The API's routes, declared once: method, path, zod schemas for what comes in and goes out, and
 * a handler. The same declarations validate requests, document the API (openapi.ts) and type the
 * handlers. Paths are `/v1/...` with `{param}` segments.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { z } from 'zod';
import { ApiError } from './errors.js';

/** Who is on the other end of a connection: decided by the socket it came through, never claimed. */
export interface Caller {
  uid: number;
  /** Sees and acts on every user's sandboxes (root, carapace-admin). */
  admin: boolean;
}

export type HttpMethod = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

export interface RouteContext<P, Q, B> {
  caller: Caller;
  params: P;
  query: Q;
  body: B;
  req: IncomingMessage;
  res: ServerResponse;
}

/** What a handler returns: a body (status 200), or a status and a body; `streamed` when it wrote the response itself. */
export type RouteResult = { status: number; body: unknown } | { streamed: true } | unknown;

type AnyObject = z.ZodObject<z.ZodRawShape>;

export interface RouteSpec<P extends AnyObject, Q extends AnyObject, B extends z.ZodType> {
  method: HttpMethod;
  path: string;
  summary: string;
  params?: P;
  query?: Q;
  body?: B;
  /** The 2xx body's schema, for the OpenAPI document. */
  response?: z.ZodType;
  /** How the response streams, for the OpenAPI document: JSON lines, or an upgraded connection. */
  stream?: 'jsonl' | 'upgrade';
  /** A 2xx body that is text of this type, not JSON (the handler writes it), for the OpenAPI document. */
  produces?: string;
  handler(ctx: RouteContext<z.infer<P>, z.infer<Q>, z.infer<B>>): Promise<RouteResult>;
}

export interface Route {
  method: HttpMethod;
  path: string;
  summary: string;
  params?: AnyObject | undefined;
  query?: AnyObject | undefined;
  body?: z.ZodType | undefined;
  response?: z.ZodType | undefined;
  stream?: 'jsonl' | 'upgrade' | undefined;
  produces?: string | undefined;
  handler(ctx: RouteContext<unknown, unknown, unknown>): Promise<RouteResult>;
  /** The path as a pattern, and its parameter names in order. */
  match: RegExp;
  names: string[];
}

export function defineRoute<P extends AnyObject, Q extends AnyObject, B extends z.ZodType>(
  spec: RouteSpec<P, Q, B>,
): Route {
  const names: string[] = [];
  const pattern = spec.path.replace(/[.*+?^$()|[\]\\]/g, '\\$&').replace(/\{(\w+)\}/g, (_, n: string) => {
    names.push(n);
    return '([^/]+)';
  });
  return { ...(spec as unknown as Route), match: new RegExp(`^${pattern}$`), names };
}

/** Finds the route for a request; 404 or 405 otherwise. */
export function findRoute(
  routes: readonly Route[],
  method: string,
  path: string,
): { route: Route; raw: Record<string, string> } {
  let pathMatched = false;
  for (const route of routes) {
    const m = route.match.exec(path);
    if (!m) continue;
    pathMatched = true;
    if (route.method !== method) continue;
    const raw: Record<string, string> = {};
    route.names.forEach((n, i) => {
      try {
        raw[n] = decodeURIComponent(m[i + 1]!);
      } catch {
        throw new ApiError('INVALID_INPUT', `path segment "${m[i + 1]}" is not valid percent-encoding`);
      }
    });
    return { route, raw };
  }
  if (pathMatched) throw new ApiError('METHOD_NOT_ALLOWED', `${method} is not allowed on ${path}`);
  throw new ApiError('NOT_FOUND', `no such API path: ${path} (see /openapi.json)`);
}

/** Validates one part of a request against its schema; the first issue becomes the error. */
export function parsePart<T extends z.ZodType>(
  schema: T | undefined,
  value: unknown,
  where: string,
): z.infer<T> {
  if (!schema) return value as z.infer<T>;
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const issue = r.error.issues[0]!;
  const at = issue.path.length ? `${where}.${issue.path.join('.')}` : where;
  throw new ApiError('INVALID_INPUT', `${at}: ${issue.message}`, r.error.issues);
}
