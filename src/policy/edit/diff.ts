/**
 * A readable structural diff of two policies (or presets): what was added, removed or changed,
 * by path. List items that have an identity are matched by it rather than by position, so adding
 * an endpoint at the top of a list shows as one addition, not as every endpoint changing:
 * endpoints by host and ports, binaries by path, rules by method and path, strings by value.
 */
import { isDeepStrictEqual } from 'node:util';
import { stringify } from 'yaml';

export interface PolicyChange {
  kind: 'added' | 'removed' | 'changed';
  /** e.g. `network_policies.github.endpoints[api.github.com:443].access` */
  path: string;
  before?: unknown;
  after?: unknown;
}

type Identity = (item: unknown) => string | null;

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function endpointId(item: unknown): string | null {
  if (!isRecord(item)) return null;
  const ports = Array.isArray(item.ports) ? item.ports.join(',') : String(item.port ?? '');
  return `${String(item.host ?? '*')}:${ports}`;
}

function httpId(m: unknown): string | null {
  return isRecord(m) ? `${String(m.method ?? '')} ${String(m.path ?? '')}` : null;
}

const IDENTITIES: Record<string, Identity> = {
  endpoints: endpointId,
  binaries: (b) => (isRecord(b) ? String(b.path) : null),
  rules: (r) => (isRecord(r) ? httpId(r.allow) : null),
  deny_rules: httpId,
  privacy: (r) => (isRecord(r) ? String(r.name) : null),
};

function childPath(base: string, key: string): string {
  if (/^[A-Za-z0-9_-]+$/.test(key)) return base === '' ? key : `${base}.${key}`;
  return `${base}[${JSON.stringify(key)}]`;
}

function identify(list: unknown[], id: Identity | undefined): Map<string, unknown> | null {
  const scalar = list.every((x) => typeof x !== 'object' || x === null);
  const fn: Identity | undefined = scalar ? (x) => JSON.stringify(x) : id;
  if (fn === undefined) return null;
  const out = new Map<string, unknown>();
  for (const item of list) {
    const key = fn(item);
    if (key === null || out.has(key)) return null;
    out.set(key, item);
  }
  return out;
}

function walk(a: unknown, b: unknown, path: string, field: string, out: PolicyChange[]): void {
  if (isDeepStrictEqual(a, b)) return;
  if (a === undefined) {
    out.push({ kind: 'added', path, after: b });
    return;
  }
  if (b === undefined) {
    out.push({ kind: 'removed', path, before: a });
    return;
  }
  if (isRecord(a) && isRecord(b)) {
    const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])];
    for (const k of keys) walk(a[k], b[k], childPath(path, k), k, out);
    return;
  }
  if (Array.isArray(a) && Array.isArray(b)) {
    const id = IDENTITIES[field];
    const left = identify(a, id);
    const right = identify(b, id);
    if (left !== null && right !== null) {
      const scalar = [...left.values(), ...right.values()].every((x) => typeof x !== 'object' || x === null);
      for (const [k, v] of left) {
        const label = scalar ? path : `${path}[${k}]`;
        if (!right.has(k)) out.push({ kind: 'removed', path: label, before: v });
        else walk(v, right.get(k), label, '', out);
      }
      for (const [k, v] of right) {
        if (!left.has(k)) out.push({ kind: 'added', path: scalar ? path : `${path}[${k}]`, after: v });
      }
      return;
    }
    const n = Math.max(a.length, b.length);
    for (let i = 0; i < n; i++) walk(a[i], b[i], `${path}[${i}]`, '', out);
    return;
  }
  out.push({ kind: 'changed', path, before: a, after: b });
}

export function diffPolicies(before: unknown, after: unknown): PolicyChange[] {
  const out: PolicyChange[] = [];
  walk(before, after, '', '', out);
  return out;
}

export function formatValue(value: unknown): string {
  if (typeof value === 'string') return /^[\w./:*@-]+$/.test(value) ? value : JSON.stringify(value);
  if (typeof value !== 'object' || value === null) return String(value);
  return stringify(value, { collectionStyle: 'flow', lineWidth: 0 }).trim();
}

function summarizeEndpoint(ep: Record<string, unknown>): string {
  const parts = [endpointId(ep) ?? '?'];
  if (typeof ep.protocol === 'string') parts.push(ep.protocol);
  if (typeof ep.access === 'string') parts.push(`access ${ep.access}`);
  const list = (rules: unknown, pick: (r: unknown) => unknown): string =>
    (Array.isArray(rules) ? rules : []).map((r) => httpId(pick(r)) ?? '?').join(', ');
  if (Array.isArray(ep.rules)) parts.push(`allow ${list(ep.rules, (r) => (isRecord(r) ? r.allow : null))}`);
  if (Array.isArray(ep.deny_rules)) parts.push(`deny ${list(ep.deny_rules, (r) => r)}`);
  if (ep.enforcement === 'audit') parts.push('audit');
  return parts.join(' ');
}

/**
 * Network policy entries and endpoints are summarized (`slack.com:443 rest allow GET /**, POST /**`)
 * rather than dumped, so an added preset reads as a list of what it allows.
 */
function summarize(path: string, value: unknown): string {
  if (
    isRecord(value) &&
    /^network_policies(\.[\w-]+|\["[^"]*"\])$/.test(path) &&
    Array.isArray(value.endpoints)
  ) {
    const endpoints = value.endpoints.map((e) => (isRecord(e) ? summarizeEndpoint(e) : '?')).join('; ');
    const binaries = Array.isArray(value.binaries)
      ? value.binaries.map((b) => (isRecord(b) ? String(b.path) : '?')).join(', ')
      : 'any program';
    return `${endpoints} — for ${binaries}`;
  }
  if (isRecord(value) && /\.endpoints\[[^\]]*\]$/.test(path)) return summarizeEndpoint(value);
  return formatValue(value);
}

/** One line per change: `+ path: value`, `- path: value`, `~ path: before → after`. */
export function formatChanges(changes: readonly PolicyChange[]): string[] {
  return changes.map((c) => {
    const path = c.path === '' ? '(whole document)' : c.path;
    if (c.kind === 'added') return `+ ${path}: ${summarize(c.path, c.after)}`;
    if (c.kind === 'removed') return `- ${path}: ${summarize(c.path, c.before)}`;
    return `~ ${path}: ${formatValue(c.before)} → ${formatValue(c.after)}`;
  });
}
