/**
 * The privacy router: `inference.local` inside every sandbox. The egress proxy hands it each
 * connection to that name (through its internal-host port) with the sandbox's identity; the router
 * reads the sandbox's `inference` section from the policy generation in force, and for each call:
 * classifies the content (privacy rules), picks a route (rule, model name, alias, default), checks
 * the budgets, strips the agent's credentials, rewrites the model, translates the protocol when
 * the provider speaks another, injects the provider's key, streams the answer back, and records
 * one audit event and the usage. This file decides (which route, budgets, fallbacks); one try at a
 * route's provider is provider-call.ts.
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
import { inferenceActivity, type AuditSink } from '../audit/index.js';
import type { PolicyGeneration } from '../policy/index.js';
import {
  apiOfPath,
  budgetRetryHeaders,
  readBody,
  RequestTooLarge,
  sendError,
  sendModels,
  waitText,
  type ErrorKind,
} from './inbound.js';
import { classify, contentStrings, type CompiledRule } from './privacy/classify.js';
import { Redactor } from './privacy/redact.js';
import { attemptCall, type CallRecord, type ProviderCallContext } from './provider-call.js';
import { API_NAMES, type ProviderDirectory } from './providers.js';
import { routeTable, type Route } from './route-table.js';
import { isObject, str, type Json } from './translate/chat.js';
import { UpstreamClient, type TrustSource } from './upstream.js';
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

/**
 * On what the policy refuses (no inference section, a privacy rule's denial, a model that selects no
 * route, a call a privacy rule keeps on local routes that are down): the OpenAI and Anthropic SDKs
 * obey it before their own rules, which retry a 5xx twice (inbound.ts, budgetRetryHeaders).
 */
const NO_RETRY: Readonly<Record<string, string>> = { 'x-should-retry': 'false' };

/** Fallbacks followed for one call at most (a chain, never a loop). */
const MAX_HOPS = 4;

export class InferenceRouter {
  private readonly server: http.Server;
  private readonly callers = new WeakMap<object, RouterCaller>();
  private readonly client: UpstreamClient;
  private readonly redactor = new Redactor(randomBytes(32));
  readonly ledger: UsageLedger;
  /** What one try at a provider needs (provider-call.ts). */
  private readonly calls: ProviderCallContext;

  /** The proxy's internal-host handler for inference.local (src/proxy/session/internal-host.ts). */
  readonly internalHost: { readonly names: readonly string[]; open(caller: RouterCaller): Duplex };

  constructor(private readonly opts: InferenceRouterOptions) {
    this.client = new UpstreamClient(opts.upstreamTrust);
    this.ledger = new UsageLedger(opts.usage ?? new MemoryUsageStore(), opts.now ?? Date.now, 2_000, (err) =>
      opts.onError?.(err, '(usage)'),
    );
    this.calls = {
      providers: opts.providers,
      client: this.client,
      redactor: this.redactor,
      ledger: this.ledger,
    };
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
    // An agent probing for models gets the list, empty without a section; its calls are refused.
    if (api === 'models') {
      sendModels(req, res, inference === null ? [] : routeTable(inference).advertised);
      return this.audit(caller, startedAt, { api: 'models', disposition: 'allowed', status: 200 });
    }
    // No section: the policy allows no model calls (403), not a route that is down (503).
    if (inference === null)
      return refuse(
        'not_allowed',
        "this sandbox's policy has no inference section: add routes to it (docs/router.md) or use carapace inference set",
        {},
        NO_RETRY,
      );
    const table = routeTable(inference);

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
        NO_RETRY,
      );
    const routeRule = fired.find((r) => r.action === 'route');
    let route: Route;
    let selectedBy: string;
    if (routeRule !== undefined) {
      route = table.routes.get(routeRule.route as string) as Route;
      selectedBy = `privacy rule ${routeRule.name}`;
    } else {
      const sel = table.select(requestedModel);
      if (sel.kind === 'none') return refuse('invalid_request', sel.reason, base, NO_RETRY);
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
      const attempt = await attemptCall(this.calls, {
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
    // A call a privacy rule keeps on local routes is refused by the policy, not by an outage alone:
    // an SDK's retry (seconds later) would only be refused again. An outage stays retryable.
    refuse(
      'unavailable',
      `route ${route.name} is unavailable (${lastFailure}); failing closed`,
      { ...base, route, selectedBy, fallbackFrom: firstRoute },
      routeRule !== undefined ? NO_RETRY : {},
    );
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
