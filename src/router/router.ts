/**
 * The privacy router: `inference.local` inside every sandbox. The egress proxy hands it each
 * connection to that name (through its internal-host port) with the sandbox's identity; the router
 * reads the sandbox's `inference` section from the policy generation in force, and for each call:
 * classifies the content (privacy rules), picks a route (rule, model name, alias, default), checks
 * the budgets, strips the agent's credentials, rewrites the model, translates the protocol when
 * the provider speaks another, injects the provider's key, streams the answer back, and records
 * one audit event and the usage.
 *
 * Threat: the agent obtaining the provider's key, spending without bound, or sending what the
 * policy keeps on the host to a cloud provider. Assumptions:
 * - keys exist only in this process (from the gateway's sealed store or the sandbox's credential
 *   map); they go only into the upstream request's auth header, and are scrubbed from anything a
 *   provider echoes back in an error or a whole answer;
 * - only an allowlist of the agent's headers reaches a provider (its Authorization and x-api-key
 *   never do), and only an allowlist of the provider's reaches the agent;
 * - a call a privacy rule routed to a route may fall back only to a `local: true` route: when no
 *   such route answers it fails closed and nothing reaches any other provider;
 * - each call is judged by one policy generation (read once, when it arrives).
 */
import { randomBytes } from 'node:crypto';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import { duplexPair, type Duplex } from 'node:stream';
import { inferenceActivity, type AuditSink, type Disposition } from '../audit/index.js';
import type { PolicyGeneration } from '../policy/index.js';
import { conversionFor } from './conversion.js';
import {
  apiOfPath,
  budgetRetryHeaders,
  readBody,
  RequestTooLarge,
  sendError,
  waitText,
  type ErrorKind,
} from './inbound.js';
import { classify, contentStrings, type CompiledRule } from './privacy/classify.js';
import { Redactor, type Restoration } from './privacy/redact.js';
import {
  API_NAMES,
  PROVIDER_INFO,
  apiUrl,
  authHeaders,
  type Api,
  type ProviderConfig,
  type ProviderDirectory,
} from './providers.js';
import { relayResponse } from './relay.js';
import { routeTable, type Route, type RouteTable } from './route-table.js';
import { TranslationError, isObject, str, type Json } from './translate/chat.js';
import { UpstreamCallError, UpstreamClient, type TrustSource, type UpstreamResponse } from './upstream.js';
import { earliestFree, MemoryUsageStore, UsageLedger, type UsageStore } from './usage.js';

/** The name agents reach the router by. */
export const INFERENCE_HOST = 'inference.local';

/** What the proxy tells the router about a connection (the proxy's InternalHostCaller). */
export interface RouterCaller {
  readonly sandbox: string;
  readonly pid: number | undefined;
  readonly binary: string;
  readonly host: string;
  policy(): PolicyGeneration;
  generation(): number;
}

export interface InferenceRouterOptions {
  audit: AuditSink;
  providers: ProviderDirectory;
  /** Where usage is kept (the gateway's SQLite); in memory without one. */
  usage?: UsageStore | undefined;
  /**
   * What providers' TLS trusts (the proxy's: Node's roots, the host's store, --upstream-ca); Node's
   * roots without it. Called on the first https call.
   */
  upstreamTrust?: TrustSource | undefined;
  /** Unexpected errors (the call is answered 500 and the router goes on). */
  onError?: ((err: unknown, sandbox: string) => void) | undefined;
  now?: (() => number) | undefined;
}

/** Headers of the agent's request a provider may see (never Authorization or x-api-key). */
const FORWARDED_HEADERS: Record<string, (api: Api) => boolean> = {
  'anthropic-version': (api) => api === 'messages',
  'anthropic-beta': (api) => api === 'messages',
  'openai-beta': (api) => api !== 'messages',
  'idempotency-key': () => true,
};
const DEFAULT_ANTHROPIC_VERSION = '2023-06-01';
/** Fallbacks followed for one call at most (a chain, never a loop). */
const MAX_HOPS = 4;

interface CallRecord {
  api: string;
  disposition: Disposition;
  status: number;
  reason?: string | undefined;
  route?: Route | undefined;
  fallbackFrom?: string | undefined;
  selectedBy?: string | undefined;
  provider?: ProviderConfig | undefined;
  requestedModel?: string | undefined;
  translation?: string | null | undefined;
  stream?: boolean | undefined;
  tokensIn?: number | undefined;
  tokensOut?: number | undefined;
  ttftMs?: number | undefined;
  rules?: readonly string[] | undefined;
  redactions?: number | undefined;
}

export class InferenceRouter {
  private readonly server: http.Server;
  private readonly callers = new WeakMap<object, RouterCaller>();
  private readonly client: UpstreamClient;
  private readonly redactor = new Redactor(randomBytes(32));
  readonly ledger: UsageLedger;

  /** The proxy's internal-host handler for inference.local (src/proxy/internal-host.ts). */
  readonly internalHost: { readonly names: readonly string[]; open(caller: RouterCaller): Duplex };

  constructor(private readonly opts: InferenceRouterOptions) {
    this.client = new UpstreamClient(opts.upstreamTrust);
    this.ledger = new UsageLedger(opts.usage ?? new MemoryUsageStore(), opts.now ?? Date.now, 2_000, (err) =>
      opts.onError?.(err, '(usage)'),
    );
    // The proxy owns each connection's lifetime and idle time: the server adds no clocks of its own
    // (a reasoning model's answer may take many minutes).
    this.server = http.createServer(
      { requestTimeout: 0, keepAliveTimeout: 0, headersTimeout: 0 },
      (req, res) => {
        const caller = this.callers.get(req.socket);
        if (caller === undefined) return void res.destroy();
        this.handle(req, res, caller).catch((err: unknown) => {
          opts.onError?.(err, caller.sandbox);
          if (!res.headersSent) sendError(res, apiOfPath(req.url ?? ''), 'provider', 'internal error');
          else res.destroy();
        });
      },
    );
    this.server.timeout = 0;
    this.internalHost = {
      names: [INFERENCE_HOST],
      open: (caller) => {
        const [proxySide, routerSide] = duplexPair();
        this.callers.set(routerSide, caller);
        proxySide.once('close', () => routerSide.destroy());
        routerSide.once('close', () => proxySide.destroy());
        this.server.emit('connection', routerSide);
        return proxySide;
      },
    };
  }

  private audit(caller: RouterCaller, startedAt: number, r: CallRecord): void {
    this.opts.audit.emit(
      inferenceActivity({
        sandbox: caller.sandbox,
        generation: caller.generation(),
        disposition: r.disposition,
        api: r.api,
        route: r.route?.name,
        fallbackFrom: r.fallbackFrom,
        selectedBy: r.selectedBy,
        provider: r.provider?.name,
        providerType: r.provider?.type,
        requestedModel: r.requestedModel,
        model: r.route?.model,
        translation: r.translation ?? undefined,
        stream: r.stream ?? false,
        status: r.status,
        tokensIn: r.tokensIn,
        tokensOut: r.tokensOut,
        ttftMs: r.ttftMs === undefined ? undefined : Math.round(r.ttftMs * 100) / 100,
        durationMs: Math.round((performance.now() - startedAt) * 100) / 100,
        rules: r.rules ?? [],
        redactions: r.redactions,
        reason: r.reason,
        actor: { pid: caller.pid, binary: caller.binary },
      }),
    );
  }

  private async handle(req: IncomingMessage, res: ServerResponse, caller: RouterCaller): Promise<void> {
    const startedAt = performance.now();
    const api = apiOfPath(req.url ?? '/');
    const refuse = (
      kind: ErrorKind,
      message: string,
      extra: Partial<CallRecord> = {},
      headers: Record<string, string> = {},
    ): void => {
      const status = sendError(res, api, kind, message, headers);
      this.audit(caller, startedAt, {
        api: api === null ? 'unknown' : API_NAMES[api],
        disposition: 'blocked',
        status,
        reason: message,
        ...extra,
      });
    };
    if (api === null)
      return refuse(
        'not_found',
        `no such API: ${(req.url ?? '').split('?')[0] ?? ''} (inference.local serves /v1/chat/completions, /v1/completions, /v1/responses, /v1/embeddings, /v1/messages, /v1/models)`,
      );
    const method = api === 'models' ? 'GET' : 'POST';
    if (req.method !== method)
      return refuse('invalid_request', `${API_NAMES[api]} takes ${method}, not ${req.method}`);
    // One generation judges the whole call.
    const inference = caller.policy().inference;
    if (inference === null)
      return refuse(
        'unavailable',
        "this sandbox's policy has no inference section: add routes to it (docs/router.md) or use carapace inference set",
      );
    const table = routeTable(inference);
    if (api === 'models') return this.models(req, res, table, caller, startedAt);

    let body: Json;
    try {
      const raw = await readBody(req);
      const parsed: unknown = JSON.parse(raw.toString('utf8'));
      if (!isObject(parsed)) throw new SyntaxError('not an object');
      body = parsed;
    } catch (err) {
      if (err instanceof RequestTooLarge) return refuse('too_large', err.message);
      return refuse('invalid_request', 'the request body must be a JSON object');
    }
    const requestedModel = str(body.model);
    const stream = body.stream === true;

    // Privacy rules read the request as the agent sent it, before anything leaves.
    const strings = table.rules.length > 0 ? contentStrings(body) : [];
    const classification =
      table.rules.length > 0
        ? classify(
            strings.map((s) => s.value),
            table.rules,
          )
        : null;
    const fired = classification?.fired ?? [];
    const rules = fired.map((r) => r.name);
    const base: Partial<CallRecord> = { requestedModel, stream, rules };
    const deny = fired.find((r) => r.action === 'deny');
    if (deny !== undefined)
      return refuse(
        'denied',
        `privacy rule "${deny.name}" refuses requests that carry what it detects`,
        base,
      );
    const routeRule = fired.find((r) => r.action === 'route');
    let route: Route;
    let selectedBy: string;
    if (routeRule !== undefined) {
      route = table.routes.get(routeRule.route as string) as Route;
      selectedBy = `privacy rule ${routeRule.name}`;
    } else {
      const sel = table.select(requestedModel);
      if (sel.kind === 'none') return refuse('invalid_request', sel.reason, base);
      route = sel.route;
      selectedBy = sel.by;
    }

    // Budgets: an exhausted one refuses, or sends the call to its local fallback. A refusal says
    // when the call would go through again, in words and in the headers SDKs retry by.
    const budget = this.ledger.check(caller.sandbox, route, table.budget);
    const refuseBudget = (what: string, freesAt: number | null, extra: Partial<CallRecord>): void => {
      const now = (this.opts.now ?? Date.now)();
      const when =
        freesAt === null
          ? 'a limit of 0 never frees: raise it in the inference section'
          : `it frees in ${waitText(freesAt - now)}, at ${new Date(freesAt).toISOString().slice(11, 16)} UTC`;
      refuse(
        'budget',
        `${what}; ${when}`,
        extra,
        budgetRetryHeaders(freesAt === null ? null : freesAt - now),
      );
    };
    if (!budget.ok) {
      const what = `${budget.scope === 'route' ? `route ${route.name}'s` : "the sandbox's"} budget is used up (${budget.limit})`;
      const fallback = budget.fallback !== null ? table.routes.get(budget.fallback) : undefined;
      if (budget.onExhausted === 'deny' || fallback === undefined)
        return refuseBudget(what, budget.freesAt, { ...base, route, selectedBy });
      const again = this.ledger.check(caller.sandbox, fallback, table.budget);
      // The call goes through again once either route's budget frees.
      if (!again.ok)
        return refuseBudget(
          `${what}, and so is its fallback ${fallback.name}'s (${again.limit})`,
          earliestFree(budget.freesAt, again.freesAt),
          { ...base, route: fallback, selectedBy: 'budget fallback' },
        );
      selectedBy = `budget fallback (${what})`;
      route = fallback;
    }

    const redactRules = new Set<CompiledRule>(fired.filter((r) => r.action === 'redact'));
    const visited = new Set<string>();
    let firstRoute: string | undefined;
    let lastFailure = '';
    for (let hop = 0; hop < MAX_HOPS; hop++) {
      visited.add(route.name);
      const attempt = await this.attempt({
        req,
        res,
        caller,
        api,
        body,
        route,
        table,
        redactRules,
        classificationHits: classification?.hits ?? [],
        startedAt,
      });
      if (attempt.kind === 'done') {
        this.audit(caller, startedAt, {
          ...base,
          ...attempt.record,
          api: API_NAMES[api],
          route,
          selectedBy,
          fallbackFrom: firstRoute,
        });
        return;
      }
      if (attempt.kind === 'refused')
        return refuse(attempt.errorKind, attempt.message, {
          ...base,
          route,
          selectedBy,
          provider: attempt.provider,
        });
      lastFailure = attempt.message;
      // Unavailable: its fallback, if the route has one and the privacy rules allow it.
      const next =
        route.onUnavailable === 'fallback' && route.fallback !== null
          ? table.routes.get(route.fallback)
          : undefined;
      if (next === undefined || visited.has(next.name)) break;
      if (routeRule !== undefined && !next.local) {
        lastFailure += `; privacy rule "${routeRule.name}" keeps this request on local routes, so it is not sent to ${next.name}`;
        break;
      }
      const nextBudget = this.ledger.check(caller.sandbox, next, table.budget);
      if (!nextBudget.ok) {
        lastFailure += `; its fallback ${next.name} is over budget (${nextBudget.limit})`;
        break;
      }
      firstRoute ??= route.name;
      selectedBy = `fallback (${route.name} unavailable)`;
      route = next;
    }
    refuse('unavailable', `route ${route.name} is unavailable (${lastFailure}); failing closed`, {
      ...base,
      route,
      selectedBy,
      fallbackFrom: firstRoute,
    });
  }

  private async resolveProvider(sandbox: string, route: Route): Promise<ProviderConfig | string> {
    let p: ProviderConfig;
    if (route.inline !== null) {
      const cred = route.inline.credential;
      const key = cred !== null ? this.opts.providers.credential(sandbox, cred) : undefined;
      if (cred !== null && key === undefined)
        return `route ${route.name} takes its key from credential ${cred}, which this sandbox does not have (--credential ${cred})`;
      p = {
        name: `inline:${route.name}`,
        type: route.inline.type,
        baseUrl: route.inline.endpoint,
        apiKey: key,
      };
    } else {
      const named = await this.opts.providers.named(sandbox, route.provider);
      if (named === null)
        return `no provider named ${route.provider} for this sandbox's owner (carapace provider create ${route.provider} …)`;
      p = named;
    }
    if (!PROVIDER_INFO[p.type].keyOptional && (p.apiKey === undefined || p.apiKey === ''))
      return `provider ${p.name} has no key`;
    return p;
  }

  private async attempt(a: {
    req: IncomingMessage;
    res: ServerResponse;
    caller: RouterCaller;
    api: Api;
    body: Json;
    route: Route;
    table: RouteTable;
    redactRules: ReadonlySet<CompiledRule>;
    classificationHits: ReturnType<typeof classify>['hits'];
    startedAt: number;
  }): Promise<
    | { kind: 'done'; record: Partial<CallRecord> & { disposition: Disposition; status: number } }
    | { kind: 'unavailable'; message: string }
    | { kind: 'refused'; errorKind: ErrorKind; message: string; provider?: ProviderConfig | undefined }
  > {
    const { route, api, caller } = a;
    const provider = await this.resolveProvider(caller.sandbox, route);
    if (typeof provider === 'string') return { kind: 'unavailable', message: provider };
    // Redaction only for what leaves the host: a local route gets the request as the agent wrote it.
    let body = a.body;
    let restoration: Restoration | null = null;
    if (a.redactRules.size > 0 && !route.local) {
      body = structuredClone(a.body);
      restoration = this.redactor.redact(contentStrings(body), a.classificationHits, a.redactRules);
    }
    let conversion;
    let providerBody: Json;
    try {
      conversion = conversionFor(api, provider.type, route.model, body);
      providerBody = conversion.request({ ...body, model: route.model });
    } catch (err) {
      if (err instanceof TranslationError)
        return { kind: 'refused', errorKind: 'invalid_request', message: err.message, provider };
      throw err;
    }
    const stream = providerBody.stream === true;
    // Usage is counted from the stream itself: ask a chat provider for it, and drop it again if the
    // agent did not ask.
    let stripUsage = false;
    if (stream && conversion.providerApi === 'chat' && conversion.translation === null) {
      const so = isObject(providerBody.stream_options) ? providerBody.stream_options : {};
      if (so.include_usage !== true) {
        providerBody.stream_options = { ...so, include_usage: true };
        stripUsage = true;
      }
    }
    const headers: Record<string, string> = {
      'content-type': 'application/json',
      accept: stream ? 'text/event-stream' : 'application/json',
      'user-agent': 'carapace-router',
      ...authHeaders(provider),
    };
    for (const [name, allowed] of Object.entries(FORWARDED_HEADERS)) {
      const v = a.req.headers[name];
      if (typeof v === 'string' && allowed(conversion.providerApi)) headers[name] = v;
    }
    if (conversion.providerApi === 'messages') headers['anthropic-version'] ??= DEFAULT_ANTHROPIC_VERSION;
    this.ledger.begin(caller.sandbox, route.name, route.local);
    let up: UpstreamResponse;
    try {
      up = await this.client.send({
        url: apiUrl(provider, conversion.providerApi),
        method: 'POST',
        headers,
        body: Buffer.from(JSON.stringify(providerBody)),
        timeoutMs: route.timeoutMs,
        idleTimeoutMs: route.idleTimeoutMs,
      });
    } catch (err) {
      if (err instanceof UpstreamCallError) {
        if (err.kind === 'connect') return { kind: 'unavailable', message: err.message };
        // A timeout before the answer began: nothing was sent to the agent yet.
        return { kind: 'refused', errorKind: 'timeout', message: err.message, provider };
      }
      throw err;
    }
    if ((up.status === 502 || up.status === 503 || up.status === 504) && route.onUnavailable === 'fallback') {
      up.abort();
      return { kind: 'unavailable', message: `the provider answered ${up.status}` };
    }
    const outcome = await relayResponse({
      res: a.res,
      up,
      api,
      conversion,
      restoration,
      stripUsage,
      secrets: provider.apiKey !== undefined ? [provider.apiKey] : [],
      startedAt: a.startedAt,
    });
    this.ledger.finish(
      caller.sandbox,
      route.name,
      route.local,
      outcome.tokensIn ?? 0,
      outcome.tokensOut ?? 0,
    );
    return {
      kind: 'done',
      record: {
        disposition: 'allowed',
        status: outcome.status,
        provider,
        translation: conversion.translation,
        tokensIn: outcome.tokensIn,
        tokensOut: outcome.tokensOut,
        ttftMs: outcome.ttftMs,
        redactions: restoration?.count,
        reason: outcome.error,
      },
    };
  }

  private models(
    req: IncomingMessage,
    res: ServerResponse,
    table: RouteTable,
    caller: RouterCaller,
    startedAt: number,
  ): void {
    const created = Math.floor(Date.now() / 1000);
    const anthropic = typeof req.headers['anthropic-version'] === 'string';
    const ids = table.advertised;
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
    this.audit(caller, startedAt, { api: 'models', disposition: 'allowed', status: 200 });
  }

  /** Writes pending usage to the store (before reading it back). */
  flushUsage(): void {
    this.ledger.flush();
  }

  async close(): Promise<void> {
    this.ledger.close();
    this.client.close();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
