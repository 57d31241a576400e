/**
 * One try of a call at one route's provider: the provider (stored, or inline with the sandbox's
 * credential) and its key, the request redacted when it leaves the host, converted to the
 * provider's protocol, sent with the allowed headers and the provider's key, and the answer
 * relayed back (relay.ts). router.ts decides which route to try, and what to do when one is
 * unavailable. The security assumptions are router.ts's: the key goes only into the upstream
 * request's auth header, and only FORWARDED_HEADERS of the agent's reach the provider.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Disposition } from '../audit/index.js';
import { conversionFor } from './conversion.js';
import type { ErrorKind } from './inbound.js';
import { contentStrings, type classify, type CompiledRule } from './privacy/classify.js';
import type { Redactor, Restoration } from './privacy/redact.js';
import {
  PROVIDER_INFO,
  apiUrl,
  authHeaders,
  type Api,
  type ProviderConfig,
  type ProviderDirectory,
} from './providers.js';
import { relayResponse } from './relay.js';
import type { Route, RouteTable } from './route-table.js';
import { TranslationError, isObject, type Json } from './translate/chat.js';
import { UpstreamCallError, type UpstreamClient, type UpstreamResponse } from './upstream.js';
import type { UsageLedger } from './usage.js';

/** Headers of the agent's request a provider may see (never Authorization or x-api-key). */
const FORWARDED_HEADERS: Record<string, (api: Api) => boolean> = {
  'anthropic-version': (api) => api === 'messages',
  'anthropic-beta': (api) => api === 'messages',
  'openai-beta': (api) => api !== 'messages',
  'idempotency-key': () => true,
};
const DEFAULT_ANTHROPIC_VERSION = '2023-06-01';

/** What the audit event of a call records. */
export interface CallRecord {
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

/** What a try needs of the router: where providers and keys are, the HTTP client, the redactor, the ledger. */
export interface ProviderCallContext {
  providers: ProviderDirectory;
  client: UpstreamClient;
  redactor: Redactor;
  ledger: UsageLedger;
}

export async function resolveProvider(
  providers: ProviderDirectory,
  sandbox: string,
  route: Route,
): Promise<ProviderConfig | string> {
  let p: ProviderConfig;
  if (route.inline !== null) {
    const cred = route.inline.credential;
    const key = cred !== null ? providers.credential(sandbox, cred) : undefined;
    if (cred !== null && key === undefined)
      return `route ${route.name} takes its key from credential ${cred}, which this sandbox does not have (--credential ${cred})`;
    p = {
      name: `inline:${route.name}`,
      type: route.inline.type,
      baseUrl: route.inline.endpoint,
      apiKey: key,
    };
  } else {
    const named = await providers.named(sandbox, route.provider);
    if (named === null)
      return `no provider named ${route.provider} for this sandbox's owner (carapace provider create ${route.provider} …)`;
    p = named;
  }
  if (!PROVIDER_INFO[p.type].keyOptional && (p.apiKey === undefined || p.apiKey === ''))
    return `provider ${p.name} has no key`;
  return p;
}

export async function attemptCall(
  ctx: ProviderCallContext,
  a: {
    req: IncomingMessage;
    res: ServerResponse;
    caller: { readonly sandbox: string };
    api: Api;
    body: Json;
    route: Route;
    table: RouteTable;
    redactRules: ReadonlySet<CompiledRule>;
    classificationHits: ReturnType<typeof classify>['hits'];
    startedAt: number;
  },
): Promise<
  | { kind: 'done'; record: Partial<CallRecord> & { disposition: Disposition; status: number } }
  | { kind: 'unavailable'; message: string }
  | { kind: 'refused'; errorKind: ErrorKind; message: string; provider?: ProviderConfig | undefined }
> {
  const { route, api, caller } = a;
  const provider = await resolveProvider(ctx.providers, caller.sandbox, route);
  if (typeof provider === 'string') return { kind: 'unavailable', message: provider };
  // Redaction only for what leaves the host: a local route gets the request as the agent wrote it.
  let body = a.body;
  let restoration: Restoration | null = null;
  if (a.redactRules.size > 0 && !route.local) {
    body = structuredClone(a.body);
    restoration = ctx.redactor.redact(contentStrings(body), a.classificationHits, a.redactRules);
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
  ctx.ledger.begin(caller.sandbox, route.name, route.local);
  let up: UpstreamResponse;
  try {
    up = await ctx.client.send({
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
  ctx.ledger.finish(caller.sandbox, route.name, route.local, outcome.tokensIn ?? 0, outcome.tokensOut ?? 0);
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
