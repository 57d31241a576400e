/**
 * Audit events in OCSF (Open Cybersecurity Schema Framework) shape, one JSON object per line.
 *
 * Classes used: 4001 Network Activity (a connection decision), 4002 HTTP Activity (an L7 decision),
 * 2004 Detection Finding (something suspicious, e.g. SNI ≠ CONNECT host), 6002 Application
 * Lifecycle (a sandbox started/stopped and what it enforced), 5019 Device Config State Change (a policy
 * change), 6003 API Activity (an inference call).
 *
 * Security assumption: builders take only what may be logged. There is no parameter for a query
 * string, a header value or a credential, so a caller cannot leak one by accident.
 */

export const OCSF_VERSION = '1.3.0';

export type Disposition = 'allowed' | 'blocked' | 'audited';

/** Carapace's own fields, kept in OCSF's `unmapped` object. */
export interface CarapaceContext {
  sandbox: string;
  policy?: string | undefined;
  reason?: string | undefined;
  enforcement?: 'enforce' | 'audit' | undefined;
  generation?: number | undefined;
}

export interface Actor {
  pid?: number | undefined;
  binary?: string | undefined;
  /** Executables of the parent chain, nearest first: recorded on refusals (OCSF `lineage`). */
  ancestors?: readonly string[] | undefined;
}

export interface OcsfEvent {
  class_uid: number;
  category_uid: number;
  activity_id: number;
  type_uid: number;
  severity_id: number;
  time: number;
  message: string;
  metadata: { version: string; product: { name: string; vendor_name: string } };
  unmapped: CarapaceContext & Record<string, unknown>;
  [field: string]: unknown;
}

const SEVERITY = { informational: 1, low: 2, medium: 3, high: 4 } as const;
type Severity = keyof typeof SEVERITY;

const METADATA = Object.freeze({
  version: OCSF_VERSION,
  product: Object.freeze({ name: 'Carapace', vendor_name: 'Carapace' }),
});

// Events are built as single object literals, without spreads: the proxy builds one per request,
// and spreading small objects costs microseconds per event on Node 20.
function base(
  classUid: number,
  activityId: number,
  severity: Severity,
  message: string,
  ctx: CarapaceContext,
): OcsfEvent {
  return {
    class_uid: classUid,
    category_uid: Math.floor(classUid / 1000),
    activity_id: activityId,
    type_uid: classUid * 100 + activityId,
    severity_id: SEVERITY[severity],
    time: Date.now(),
    message,
    metadata: METADATA,
    unmapped: pickContext(ctx),
  };
}

/** OCSF disposition_id: 1 Allowed, 2 Blocked, 17 Logged (audit mode: allowed, but only logged). */
function setDisposition(ev: OcsfEvent, d: Disposition): void {
  if (d === 'allowed') {
    ev.disposition_id = 1;
    ev.disposition = 'Allowed';
    ev.status_id = 1;
  } else if (d === 'audited') {
    ev.disposition_id = 17;
    ev.disposition = 'Logged';
    ev.status_id = 1;
  } else {
    ev.disposition_id = 2;
    ev.disposition = 'Blocked';
    ev.status_id = 2;
  }
}

function setActor(ev: OcsfEvent, actor: Actor | undefined): void {
  if (!actor || (actor.pid === undefined && actor.binary === undefined)) return;
  const process: Record<string, unknown> = {
    pid: actor.pid,
    file: actor.binary ? { path: actor.binary } : undefined,
  };
  // Only refusals carry the chain: a proposal shows who asked (docs/operator.md); allowed
  // traffic, the bulk of the trail, stays as small as it was.
  if (ev.disposition_id === 2 && actor.ancestors !== undefined && actor.ancestors.length > 0)
    process.lineage = [...actor.ancestors];
  ev.actor = { process };
}

function addDetails(ev: OcsfEvent, details: Record<string, unknown> | undefined): void {
  if (!details) return;
  for (const key of Object.keys(details)) ev.unmapped[key] = details[key];
}

export interface NetworkDecisionEvent extends CarapaceContext {
  disposition: Disposition;
  host: string;
  port: number;
  ip?: string | undefined;
  srcPort?: number | undefined;
  actor?: Actor | undefined;
}

/** 4001: one per connection decision. Activity 1 Open when allowed, 5 Refuse when blocked. */
export function networkActivity(e: NetworkDecisionEvent): OcsfEvent {
  const blocked = e.disposition === 'blocked';
  const verb = blocked ? 'refused' : e.disposition === 'audited' ? 'allowed (audit)' : 'allowed';
  const ev = base(
    4001,
    blocked ? 5 : 1,
    blocked ? 'medium' : 'informational',
    `connect ${e.host}:${e.port} ${verb}${e.reason ? `: ${e.reason}` : ''}`,
    e,
  );
  setDisposition(ev, e.disposition);
  setActor(ev, e.actor);
  ev.dst_endpoint = { hostname: e.host, port: e.port, ip: e.ip };
  if (e.srcPort !== undefined) ev.src_endpoint = { port: e.srcPort };
  return ev;
}

/** Close of a tunnel that policy no longer allows (hot reload): 4001 activity 2 Close. */
export function networkClose(e: NetworkDecisionEvent): OcsfEvent {
  const ev = base(4001, 2, 'low', `closed ${e.host}:${e.port}${e.reason ? `: ${e.reason}` : ''}`, e);
  setDisposition(ev, e.disposition);
  setActor(ev, e.actor);
  ev.dst_endpoint = { hostname: e.host, port: e.port };
  return ev;
}

const HTTP_ACTIVITY: Record<string, number> = {
  CONNECT: 1,
  DELETE: 2,
  GET: 3,
  HEAD: 4,
  OPTIONS: 5,
  POST: 6,
  PUT: 7,
  TRACE: 8,
  PATCH: 9,
};

export interface HttpDecisionEvent extends CarapaceContext {
  disposition: Disposition;
  method: string;
  host: string;
  port: number;
  /** The path only. Never the query string: it often carries tokens. */
  path: string;
  actor?: Actor | undefined;
  status?: number | undefined;
}

/** 4002: one per L7 request decision. */
export function httpActivity(e: HttpDecisionEvent): OcsfEvent {
  const verb =
    e.disposition === 'blocked' ? 'refused' : e.disposition === 'audited' ? 'allowed (audit)' : 'allowed';
  const ev = base(
    4002,
    HTTP_ACTIVITY[e.method.toUpperCase()] ?? 99,
    e.disposition === 'blocked' ? 'medium' : 'informational',
    `${e.method} ${e.host}${e.path} ${verb}${e.reason ? `: ${e.reason}` : ''}`,
    e,
  );
  setDisposition(ev, e.disposition);
  setActor(ev, e.actor);
  ev.http_request = { http_method: e.method, url: { hostname: e.host, port: e.port, path: e.path } };
  if (e.status !== undefined) ev.http_response = { code: e.status };
  return ev;
}

export interface FindingEvent extends CarapaceContext {
  /** Stable identifier, e.g. `sni-mismatch`, `unbound-credential`, `landlock-feature-missing`. */
  kind: string;
  title: string;
  severity?: Severity;
  host?: string | undefined;
  port?: number | undefined;
  actor?: Actor | undefined;
  details?: Record<string, unknown>;
}

/** 2004: a detection finding. */
export function finding(e: FindingEvent): OcsfEvent {
  const ev = base(2004, 1, e.severity ?? 'medium', e.title, e);
  setActor(ev, e.actor);
  ev.finding_info = { uid: e.kind, title: e.title, types: [e.kind] };
  if (e.host !== undefined) ev.dst_endpoint = { hostname: e.host, port: e.port };
  addDetails(ev, e.details);
  return ev;
}

/** `lost`: the process that ran the sandbox died without stopping it (found by a later sweep). */
export type LifecycleActivity = 'start' | 'stop' | 'update' | 'lost';
const LIFECYCLE: Record<LifecycleActivity, number> = { start: 3, stop: 4, update: 8, lost: 99 };

export interface LifecycleEvent extends CarapaceContext {
  activity: LifecycleActivity;
  message: string;
  details?: Record<string, unknown>;
}

/** 6002: the sandbox started (with what it enforced) or stopped (with its exit status). */
export function lifecycle(e: LifecycleEvent): OcsfEvent {
  const ev = base(6002, LIFECYCLE[e.activity], 'informational', e.message, e);
  ev.app = { name: e.sandbox };
  addDetails(ev, e.details);
  return ev;
}

export interface ConfigChangeEvent extends CarapaceContext {
  accepted: boolean;
  message: string;
  details?: Record<string, unknown>;
}

/** 5019: a policy change applied to (or refused for) a running sandbox. */
export function configChange(e: ConfigChangeEvent): OcsfEvent {
  const ev = base(5019, e.accepted ? 1 : 99, e.accepted ? 'informational' : 'low', e.message, e);
  ev.status_id = e.accepted ? 1 : 2;
  addDetails(ev, e.details);
  return ev;
}

export interface InferenceCallEvent extends CarapaceContext {
  disposition: Disposition;
  /** The API the agent called: chat.completions, completions, responses, embeddings, messages, models. */
  api: string;
  /** The route that served it (after any fallback), and the route first chosen when it fell back. */
  route?: string | undefined;
  fallbackFrom?: string | undefined;
  /** Why this route: privacy rule, model name, alias, default, budget fallback, unavailable fallback. */
  selectedBy?: string | undefined;
  provider?: string | undefined;
  providerType?: string | undefined;
  /** The model the agent asked for, and the model sent to the provider. */
  requestedModel?: string | undefined;
  model?: string | undefined;
  /** Translation between wire protocols, e.g. `responses→chat.completions`. */
  translation?: string | undefined;
  stream: boolean;
  status: number;
  tokensIn?: number | undefined;
  tokensOut?: number | undefined;
  /** Milliseconds from the request to the first output sent to the agent. */
  ttftMs?: number | undefined;
  durationMs: number;
  /** Names of the privacy rules that fired (never what they matched). */
  rules: readonly string[];
  /** What the rules did: routed, redacted (with the count of values replaced), denied. */
  redactions?: number | undefined;
  actor?: Actor | undefined;
}

/**
 * 6003 API Activity: one inference call through the router. Names and numbers only: never the
 * prompt, the completion, what a privacy rule matched, or a key.
 */
export function inferenceActivity(e: InferenceCallEvent): OcsfEvent {
  const blocked = e.disposition === 'blocked';
  const where =
    e.route !== undefined ? ` via ${e.route}${e.provider !== undefined ? ` (${e.provider})` : ''}` : '';
  const ev = base(
    6003,
    e.api === 'models' ? 2 : 1,
    blocked ? 'medium' : 'informational',
    `inference ${e.api}${where} ${blocked ? 'refused' : 'served'} (${e.status})${e.reason ? `: ${e.reason}` : ''}`,
    e,
  );
  setDisposition(ev, e.disposition);
  setActor(ev, e.actor);
  ev.api = { operation: e.api, service: { name: e.provider ?? 'inference.local' } };
  ev.http_response = { code: e.status };
  ev.duration = e.durationMs;
  const u = ev.unmapped;
  u.inference = {
    api: e.api,
    route: e.route ?? null,
    fallback_from: e.fallbackFrom ?? null,
    selected_by: e.selectedBy ?? null,
    provider: e.provider ?? null,
    provider_type: e.providerType ?? null,
    requested_model: e.requestedModel ?? null,
    model: e.model ?? null,
    translation: e.translation ?? null,
    stream: e.stream,
    tokens_in: e.tokensIn ?? null,
    tokens_out: e.tokensOut ?? null,
    ttft_ms: e.ttftMs ?? null,
    duration_ms: e.durationMs,
    rules: [...e.rules],
    redactions: e.redactions ?? 0,
  };
  return ev;
}

function pickContext(c: CarapaceContext): OcsfEvent['unmapped'] {
  const ctx: OcsfEvent['unmapped'] = { sandbox: c.sandbox };
  if (c.policy !== undefined) ctx.policy = c.policy;
  if (c.reason !== undefined) ctx.reason = c.reason;
  if (c.enforcement !== undefined) ctx.enforcement = c.enforcement;
  if (c.generation !== undefined) ctx.generation = c.generation;
  return ctx;
}
