/**
 * A sandbox's routes, compiled once per policy generation from its `inference` section: durations
 * parsed, aliases indexed, privacy rules compiled. The router reads the table of the generation in
 * force for each request, so a reload changes the next request's routing and nothing else.
 */
import {
  parseDurationMs,
  type Inference,
  type InferenceBudget,
  type InferenceRoute,
  type ProviderType,
} from '../policy/index.js';
import { compileRules, type CompiledRule } from './privacy/classify.js';

/** Defaults that suit reasoning models, which may think for minutes before the first token. */
export const DEFAULT_TIMEOUT_MS = 30 * 60_000;
export const DEFAULT_IDLE_TIMEOUT_MS = 10 * 60_000;

export interface Route {
  name: string;
  /** A stored provider's name, or (inline) the provider type. */
  provider: string;
  /** Inline provider: its endpoint and type, and the credential holding its key. */
  inline: { type: ProviderType; endpoint: string; credential: string | null } | null;
  model: string;
  local: boolean;
  timeoutMs: number;
  idleTimeoutMs: number;
  onUnavailable: 'fail' | 'fallback';
  fallback: string | null;
  budget: InferenceBudget | null;
}

export type Selection =
  | { kind: 'route'; route: Route; by: 'model' | 'alias' | 'route name' | 'default' | 'only route' }
  | { kind: 'none'; reason: string };

export interface RouteTable {
  routes: ReadonlyMap<string, Route>;
  defaultRoute: string | null;
  rules: readonly CompiledRule[];
  budget: InferenceBudget | null;
  /** Names an agent may ask for, in the order /v1/models lists them. */
  advertised: readonly string[];
  select(requestedModel: string | undefined): Selection;
}

const cache = new WeakMap<Inference, RouteTable>();

/** The table of an inference section (compiled once per section object, i.e. per generation). */
export function routeTable(inf: Inference): RouteTable {
  let t = cache.get(inf);
  if (t === undefined) {
    t = compile(inf);
    cache.set(inf, t);
  }
  return t;
}

function ms(v: number | string | undefined, fallback: number): number {
  if (v === undefined) return fallback;
  const r = parseDurationMs(v);
  return typeof r === 'number' ? r : fallback;
}

function compileRoute(name: string, r: InferenceRoute, inf: Inference): Route {
  const onUnavailable = r.on_unavailable ?? inf.on_unavailable ?? 'fail';
  return {
    name,
    provider: r.provider,
    inline:
      r.endpoint !== undefined
        ? { type: r.provider as ProviderType, endpoint: r.endpoint, credential: r.credential_env ?? null }
        : null,
    model: r.model,
    local: r.local === true,
    timeoutMs: ms(r.timeout, DEFAULT_TIMEOUT_MS),
    idleTimeoutMs: ms(r.idle_timeout, DEFAULT_IDLE_TIMEOUT_MS),
    onUnavailable: onUnavailable === 'fallback' ? 'fallback' : 'fail',
    fallback: r.fallback ?? (onUnavailable === 'fallback' ? (inf.fallback ?? null) : null),
    budget: r.budget ?? null,
  };
}

function compile(inf: Inference): RouteTable {
  const routes = new Map<string, Route>();
  for (const [name, r] of Object.entries(inf.routes)) routes.set(name, compileRoute(name, r, inf));
  // Selection by the requested model: a route's name first, then an alias, then a route's model.
  const byName = new Map<string, { route: Route; by: 'model' | 'alias' | 'route name' }>();
  for (const route of routes.values()) {
    if (!byName.has(route.model)) byName.set(route.model, { route, by: 'model' });
  }
  for (const [name, r] of Object.entries(inf.routes))
    for (const alias of r.aliases ?? []) byName.set(alias, { route: routes.get(name) as Route, by: 'alias' });
  for (const route of routes.values()) byName.set(route.name, { route, by: 'route name' });
  const advertised = [
    ...new Set([...routes.keys(), ...Object.values(inf.routes).flatMap((r) => r.aliases ?? [])]),
  ];
  const defaultRoute = inf.default ?? (routes.size === 1 ? ([...routes.keys()][0] as string) : null);
  return {
    routes,
    defaultRoute,
    rules: compileRules(inf.privacy ?? []),
    budget: inf.budget ?? null,
    advertised,
    select(requested) {
      if (requested !== undefined) {
        const hit = byName.get(requested);
        if (hit !== undefined) return { kind: 'route', route: hit.route, by: hit.by };
      }
      if (defaultRoute !== null) {
        const route = routes.get(defaultRoute) as Route;
        return { kind: 'route', route, by: inf.default !== undefined ? 'default' : 'only route' };
      }
      const names = [...routes.keys()].join(', ') || 'none';
      return {
        kind: 'none',
        reason:
          requested === undefined
            ? `the request names no model and the policy sets no inference.default (routes: ${names})`
            : `model "${requested}" selects no route and the policy sets no inference.default (routes: ${names})`,
      };
    },
  };
}
