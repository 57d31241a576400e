/**
 * Checks of the `inference` section that the schema cannot express: route names that must exist,
 * URLs, durations, privacy patterns the router can run in linear time, budgets that fall back only
 * to local routes. Each issue carries the data path of the offending node.
 */
import type { PolicyIssue, PolicyPath } from '../diagnostics.js';
import { compileLinearPattern } from '../patterns/linear-pattern.js';
import type { Inference, InferenceBudget } from '../schema/schema-extensions.js';

/** Provider types an inline route (one with an `endpoint`) may name. */
export const PROVIDER_TYPES = [
  'openai',
  'anthropic',
  'nvidia',
  'ollama',
  'vllm',
  'openai-compatible',
] as const;
export type ProviderType = (typeof PROVIDER_TYPES)[number];

/** Names of providers stored by the gateway (the same shape as sandbox names). */
export const PROVIDER_NAME = /^[a-z0-9][a-z0-9_.-]{0,62}$/;
const CREDENTIAL_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const MAX_DURATION_MS = 24 * 3_600_000;

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Milliseconds of a duration (`90s`, `10m`, `1h`, `500ms`, or seconds as a number). */
export function parseDurationMs(value: number | string): number | { error: string } {
  let ms: number;
  if (typeof value === 'number') {
    ms = value * 1000;
  } else {
    const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$/.exec(value);
    if (m === null)
      return { error: `"${value}" is not a duration; write a number of seconds or e.g. 90s, 10m, 1h` };
    ms = Number(m[1]) * (UNITS[m[2] as string] as number);
  }
  if (!Number.isFinite(ms) || ms < 1) return { error: `duration ${String(value)} must be at least 1ms` };
  if (ms > MAX_DURATION_MS) return { error: `duration ${String(value)} is longer than 24h` };
  return Math.round(ms);
}

/**
 * Why a custom privacy pattern cannot run on the router's linear-time engine (backreferences and
 * lookarounds need backtracking), or null. Checked here so that the author hears it at load time.
 */
export function linearPatternProblem(pattern: string): string | null {
  let inClass = false;
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === '\\') {
      const n = pattern[i + 1] ?? '';
      if (!inClass && (/[1-9]/.test(n) || n === 'k'))
        return 'backreferences (\\1, \\k<name>) are not supported: patterns run in linear time';
      i++;
      continue;
    }
    if (inClass) {
      if (c === ']') inClass = false;
      continue;
    }
    if (c === '[') inClass = true;
    else if (c === '(' && pattern[i + 1] === '?') {
      const kind = pattern.slice(i + 2, i + 4);
      if (kind.startsWith('=') || kind.startsWith('!') || kind === '<=' || kind === '<!')
        return 'lookarounds ((?=, (?!, (?<=, (?<!) are not supported: patterns run in linear time';
    }
  }
  return null;
}

export function checkInference(inf: Inference, issues: PolicyIssue[]): void {
  const routes = Object.keys(inf.routes);
  const base: PolicyPath = ['inference'];
  // A section without routes would answer every model call 400, which an agent sees only as its
  // model failing; no real policy needs one (the compat files carry no inference section at all).
  if (routes.length === 0)
    issues.push({
      path: [...base, 'routes'],
      message:
        'the inference section has no routes: every model call would be refused; add a route ' +
        '(NAME: { provider: PROVIDER, model: MODEL }) or remove the inference section',
    });
  const ref = (name: string | undefined, path: PolicyPath): boolean => {
    if (name === undefined) return false;
    if (routes.includes(name)) return true;
    const known = routes.length > 0 ? routes.join(', ') : 'none defined';
    issues.push({ path, message: `route "${name}" is not defined in inference.routes (routes: ${known})` });
    return false;
  };
  const localRoute = (name: string | undefined, path: PolicyPath, what: string): void => {
    if (!ref(name, path)) return;
    if (inf.routes[name as string]?.local !== true)
      issues.push({ path, message: `${what} route "${name}" must be local: true (a model on this host)` });
  };
  const budget = (b: InferenceBudget | undefined, path: PolicyPath): void => {
    if (b === undefined) return;
    if (b.on_exhausted === 'fallback' && b.fallback === undefined) {
      issues.push({
        path: [...path, 'on_exhausted'],
        message: 'on_exhausted is "fallback" but no "fallback" route is named; add "fallback: <local route>"',
      });
    }
    if (b.fallback !== undefined) localRoute(b.fallback, [...path, 'fallback'], 'a budget’s fallback');
    const limits = [b.requests_per_hour, b.requests_per_day, b.tokens_per_hour, b.tokens_per_day];
    if (limits.every((l) => l === undefined))
      issues.push({
        path,
        message:
          'a budget needs at least one of requests_per_hour, requests_per_day, tokens_per_hour, tokens_per_day',
      });
  };
  const seenNames = new Map<string, string>();
  for (const [name, route] of Object.entries(inf.routes)) {
    const at: PolicyPath = [...base, 'routes', name];
    if (name.trim() === '') issues.push({ path: at, at: 'key', message: 'a route name must not be empty' });
    if (route.endpoint !== undefined) {
      let url: URL | null = null;
      try {
        url = new URL(route.endpoint);
      } catch {
        url = null;
      }
      if (url === null || (url.protocol !== 'http:' && url.protocol !== 'https:')) {
        issues.push({
          path: [...at, 'endpoint'],
          message: `endpoint "${route.endpoint}" must be an http(s) URL, e.g. https://api.example.com/v1`,
        });
      } else if (url.username !== '' || url.password !== '' || url.search !== '' || url.hash !== '') {
        issues.push({
          path: [...at, 'endpoint'],
          message:
            'endpoint must not carry credentials, a query or a fragment; keys belong in credential_env',
        });
      }
      if (!(PROVIDER_TYPES as readonly string[]).includes(route.provider)) {
        issues.push({
          path: [...at, 'provider'],
          message: `with an endpoint, provider is the provider's type: one of ${PROVIDER_TYPES.join(', ')}`,
        });
      }
    } else {
      if (!PROVIDER_NAME.test(route.provider))
        issues.push({
          path: [...at, 'provider'],
          message: `"${route.provider}" is not a provider name (lower case letters, digits, . _ -); or give an endpoint`,
        });
      if (route.credential_env !== undefined)
        issues.push({
          path: [...at, 'credential_env'],
          message:
            'credential_env is for inline providers (with an endpoint); a stored provider holds its own key',
        });
    }
    if (route.credential_env !== undefined && !CREDENTIAL_NAME.test(route.credential_env)) {
      issues.push({
        path: [...at, 'credential_env'],
        message: `"${route.credential_env}" is not a valid variable name`,
      });
    }
    for (const field of ['timeout', 'idle_timeout'] as const) {
      const v = route[field];
      if (v === undefined) continue;
      const r = parseDurationMs(v);
      if (typeof r !== 'number') issues.push({ path: [...at, field], message: r.error });
    }
    if (route.on_unavailable === 'fallback' && route.fallback === undefined) {
      issues.push({
        path: [...at, 'on_unavailable'],
        message: 'on_unavailable is "fallback" but no "fallback" route is named; add "fallback: <route>"',
      });
    }
    if (route.fallback === name)
      issues.push({ path: [...at, 'fallback'], message: 'a route cannot be its own fallback' });
    else ref(route.fallback, [...at, 'fallback']);
    budget(route.budget, [...at, 'budget']);
    route.aliases?.forEach((alias, i) => {
      const other = seenNames.get(alias);
      if (other !== undefined && other !== name)
        issues.push({
          path: [...at, 'aliases', i],
          message: `alias "${alias}" already selects route "${other}"; an alias names one route`,
        });
      else if (routes.includes(alias) && alias !== name)
        issues.push({
          path: [...at, 'aliases', i],
          message: `alias "${alias}" is the name of another route`,
        });
      seenNames.set(alias, name);
    });
  }
  ref(inf.default, [...base, 'default']);
  ref(inf.fallback, [...base, 'fallback']);
  if (inf.on_unavailable === 'fallback' && inf.fallback === undefined) {
    issues.push({
      path: [...base, 'on_unavailable'],
      message: 'on_unavailable is "fallback" but no "fallback" route is named; add "fallback: <route>"',
    });
  }
  budget(inf.budget, [...base, 'budget']);
  const ruleNames = new Set<string>();
  inf.privacy?.forEach((rule, i) => {
    const at: PolicyPath = [...base, 'privacy', i];
    if (ruleNames.has(rule.name))
      issues.push({ path: [...at, 'name'], message: `privacy rule "${rule.name}" is defined twice` });
    ruleNames.add(rule.name);
    if (rule.detect === undefined && rule.match === undefined)
      issues.push({
        path: at,
        message: 'a privacy rule needs "detect" (built-in detectors), "match" (a pattern) or both',
      });
    const action = rule.action ?? (rule.route !== undefined ? 'route' : undefined);
    if (action === undefined)
      issues.push({
        path: at,
        message: 'a privacy rule needs "route: <route>", or "action: redact" or "action: deny"',
      });
    if (action === 'route' && rule.route === undefined)
      issues.push({ path: [...at, 'action'], message: 'action "route" needs "route: <route>"' });
    if (action !== undefined && action !== 'route' && rule.route !== undefined)
      issues.push({ path: [...at, 'route'], message: `action "${action}" takes no route; remove "route"` });
    ref(rule.route, [...at, 'route']);
    if (rule.match !== undefined) {
      const problem = linearPatternProblem(rule.match);
      const compiled = problem === null ? compileLinearPattern(rule.match) : { error: problem };
      if ('error' in compiled) issues.push({ path: [...at, 'match'], message: `"match": ${compiled.error}` });
    }
  });
}
