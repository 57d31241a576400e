/**
 * Turns zod's schema issues into messages a policy author can act on: what is wrong, where, and
 * how to fix it (`unknown key "acess" in endpoint (did you mean "access"?)`).
 */
import type { z } from 'zod';
import type { PolicyIssue, PolicyPath } from '../diagnostics.js';

type AnySchema = z.ZodType;

/** What a path points into, in the words of the docs: `endpoint`, `network policy "github"`, … */
export function describeContext(path: PolicyPath): string {
  const last = path[path.length - 1];
  const parent = path[path.length - 2];
  if (path.length === 0) return 'the policy';
  if (path.length === 2 && path[0] === 'network_policies') return `network policy "${String(last)}"`;
  if (path.length === 3 && path[0] === 'inference' && path[1] === 'routes') {
    return `inference route "${String(last)}"`;
  }
  if (typeof last === 'number') {
    switch (parent) {
      case 'endpoints':
        return 'endpoint';
      case 'binaries':
        return 'binary';
      case 'rules':
        return 'rule';
      case 'deny_rules':
        return 'deny rule';
      case 'privacy':
        return 'privacy rule';
      default:
        return `item ${last} of ${String(parent)}`;
    }
  }
  if (last === 'allow') return 'allow rule';
  if (parent === 'query') return `query matcher "${String(last)}"`;
  if (last === 'query') return 'query';
  return String(last);
}

/** The schema that validates the value at `path`, or null when the path leaves the schema. */
export function schemaAt(root: AnySchema, path: PolicyPath): AnySchema | null {
  let schema: AnySchema | null = root;
  for (const seg of path) {
    schema = schema === null ? null : step(unwrap(schema), seg);
  }
  return schema === null ? null : unwrap(schema);
}

function unwrap(schema: AnySchema): AnySchema {
  let s = schema;
  for (;;) {
    const def = s.def as { type: string; innerType?: AnySchema };
    if ((def.type === 'optional' || def.type === 'nullable' || def.type === 'default') && def.innerType) {
      s = def.innerType;
    } else {
      return s;
    }
  }
}

function step(schema: AnySchema, seg: string | number): AnySchema | null {
  const def = schema.def as {
    type: string;
    shape?: Record<string, AnySchema>;
    element?: AnySchema;
    valueType?: AnySchema;
    options?: AnySchema[];
  };
  if (def.type === 'object' && def.shape) return def.shape[String(seg)] ?? null;
  if (def.type === 'array' && def.element) return def.element;
  if (def.type === 'record' && def.valueType) return def.valueType;
  if (def.type === 'union' && def.options) {
    for (const option of def.options) {
      const found = step(unwrap(option), seg);
      if (found !== null) return found;
    }
  }
  return null;
}

function objectKeys(schema: AnySchema | null): string[] {
  if (schema === null) return [];
  const def = schema.def as { type: string; shape?: Record<string, unknown>; options?: AnySchema[] };
  if (def.type === 'object' && def.shape) return Object.keys(def.shape);
  if (def.type === 'union' && def.options) return def.options.flatMap((o) => objectKeys(unwrap(o)));
  return [];
}

/** Every object in the schema that has `key`, as readable context names (for misplaced keys). */
function placesWithKey(root: AnySchema, key: string): string[] {
  const found = new Set<string>();
  const visit = (schema: AnySchema, path: (string | number)[], depth: number): void => {
    if (depth > 8) return;
    const s = unwrap(schema);
    const def = s.def as {
      type: string;
      shape?: Record<string, AnySchema>;
      element?: AnySchema;
      valueType?: AnySchema;
      options?: AnySchema[];
    };
    if (def.type === 'object' && def.shape) {
      if (key in def.shape) found.add(path.length === 0 ? 'the top level' : describeContext(path));
      for (const [k, child] of Object.entries(def.shape)) visit(child, [...path, k], depth + 1);
    } else if (def.type === 'array' && def.element) {
      visit(def.element, [...path, 0], depth + 1);
    } else if (def.type === 'record' && def.valueType) {
      visit(def.valueType, [...path, '*'], depth + 1);
    } else if (def.type === 'union' && def.options) {
      for (const o of def.options) visit(o, path, depth + 1);
    }
  };
  visit(root, [], 0);
  return [...found].map((p) => (p.startsWith('network policy "*"') ? 'a network policy' : p));
}

/**
 * Optimal string alignment distance: insertions, deletions, substitutions and swaps of two
 * neighbours each count 1, so a transposed typo (`GTE`, `acecss`) is as near as a missing letter.
 */
export function editDistance(a: string, b: string): number {
  let before: number[] = [];
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let d = Math.min((prev[j] ?? 0) + 1, (row[j - 1] ?? 0) + 1, (prev[j - 1] ?? 0) + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1])
        d = Math.min(d, (before[j - 2] ?? 0) + 1);
      row.push(d);
    }
    before = prev;
    prev = row;
  }
  return prev[b.length] ?? 0;
}

/** The closest candidate, if it is close enough to be a likely typo. */
export function closest(word: string, candidates: readonly string[]): string | null {
  let best: string | null = null;
  let bestDistance = Infinity;
  for (const c of candidates) {
    const d = editDistance(word.toLowerCase(), c.toLowerCase());
    if (d < bestDistance) {
      best = c;
      bestDistance = d;
    }
  }
  const limit = Math.max(1, Math.floor(word.length / 3));
  return bestDistance <= limit ? best : null;
}

function typeName(value: unknown): string {
  if (value === null || value === undefined) return 'nothing';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'a map';
  if (typeof value === 'string') return `the string "${value}"`;
  if (typeof value === 'number')
    return Number.isInteger(value) ? `the number ${value}` : `the number ${value}`;
  return `${typeof value} ${String(value)}`;
}

const EXPECTED: Record<string, string> = {
  object: 'a map of keys',
  array: 'a list',
  string: 'a string',
  number: 'a number',
  int: 'an integer',
  boolean: 'true or false',
  record: 'a map',
};

function valueAt(data: unknown, path: PolicyPath): unknown {
  let v: unknown = data;
  for (const seg of path) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<string | number, unknown>)[seg];
  }
  return v;
}

function hasKey(data: unknown, path: PolicyPath): boolean {
  if (path.length === 0) return true;
  const parent = valueAt(data, path.slice(0, -1));
  return parent !== null && typeof parent === 'object' && String(path[path.length - 1]) in parent;
}

function fieldName(path: PolicyPath): string {
  const last = path[path.length - 1];
  if (typeof last === 'number') return `${describeContext(path)}`;
  return `"${String(last)}"`;
}

/** One or more positioned-by-path issues for one zod issue. */
export function issuesFromZod(issue: z.core.$ZodIssue, data: unknown, root: AnySchema): PolicyIssue[] {
  const path = issue.path as (string | number)[];
  const value = valueAt(data, path);
  if (path.length > 0 && issue.code !== 'unrecognized_keys' && !hasKey(data, path)) {
    const parent = path.slice(0, -1);
    const example = path[path.length - 1] === 'version' ? ' ("version: 1")' : '';
    return [
      {
        path: parent,
        at: parent.length > 0 ? 'key' : 'value',
        message: `${describeContext(parent)} is missing ${fieldName(path)}; add it${example}`,
      },
    ];
  }
  switch (issue.code) {
    case 'unrecognized_keys':
      return issue.keys.map((key) => unknownKey(root, path, key));
    case 'invalid_type': {
      const expected = EXPECTED[issue.expected] ?? issue.expected;
      if (value === null) {
        return [
          {
            path,
            message: `${fieldName(path)} is empty; it must be ${expected} (check the indentation of the lines below it)`,
          },
        ];
      }
      const unquote = (issue.expected === 'number' || issue.expected === 'int') && isNumeral(value);
      const hint = unquote ? withoutQuotes(path, value) : '';
      return [{ path, message: `${fieldName(path)} must be ${expected}, not ${typeName(value)}${hint}` }];
    }
    case 'invalid_value': {
      const options = issue.values.map((v) => JSON.stringify(v));
      // `version: "1"`: the value is right but quoted; a "did you mean" would suggest the same text.
      const quoted =
        typeof value === 'string' && issue.values.some((v) => typeof v !== 'string' && String(v) === value);
      const guess = typeof value === 'string' && !quoted ? closest(value, issue.values.map(String)) : null;
      const hint = quoted ? withoutQuotes(path, value) : guess !== null ? ` (did you mean "${guess}"?)` : '';
      const list = options.length === 1 ? options[0] : `one of ${options.join(', ')}`;
      return [{ path, message: `${fieldName(path)} must be ${list}, not ${typeName(value)}${hint}` }];
    }
    case 'too_small':
    case 'too_big':
      return [{ path, message: sizeMessage(issue, path, value) }];
    case 'invalid_union':
      return [{ path, message: unionMessage(path, value) }];
    default:
      return [{ path, message: `${fieldName(path)}: ${issue.message}` }];
  }
}

/** A string YAML would have read as a number had it not been quoted (`port: "443"`). */
function isNumeral(value: unknown): value is string {
  return typeof value === 'string' && /^-?[0-9]+(\.[0-9]+)?$/.test(value.trim());
}

function withoutQuotes(path: PolicyPath, value: string): string {
  const key = path[path.length - 1];
  return typeof key === 'string'
    ? ` (write it without quotes: ${key}: ${value.trim()})`
    : ' (write it without quotes)';
}

function unknownKey(root: AnySchema, path: PolicyPath, key: string): PolicyIssue {
  const known = objectKeys(schemaAt(root, path));
  const keyPath = [...path, key];
  const context = describeContext(path);
  const guess = closest(key, known);
  if (guess !== null) {
    return {
      path: keyPath,
      at: 'key',
      message: `unknown key "${key}" in ${context} (did you mean "${guess}"?)`,
    };
  }
  const elsewhere = placesWithKey(root, key);
  if (elsewhere.length > 0) {
    return {
      path: keyPath,
      at: 'key',
      message: `"${key}" does not belong in ${context}; it is a key of ${elsewhere.join(' or ')} — check its indentation`,
    };
  }
  const list = known.length > 0 ? `; known keys: ${known.join(', ')}` : '';
  return { path: keyPath, at: 'key', message: `unknown key "${key}" in ${context}${list}` };
}

function sizeMessage(
  issue: z.core.$ZodIssueTooSmall | z.core.$ZodIssueTooBig,
  path: PolicyPath,
  value: unknown,
): string {
  const name = fieldName(path);
  if (Array.isArray(value)) {
    return issue.code === 'too_small'
      ? `${name} is an empty list; list at least one item`
      : `${name} has too many items`;
  }
  const last = path[path.length - 1];
  const portLike = last === 'port' || path.includes('ports') || path.includes('listen_ports');
  if (portLike) return `port ${String(value)} is out of range; a TCP port is 1–65535`;
  if (typeof value === 'string') return `${name} must not be empty`;
  const bound = 'minimum' in issue ? `at least ${String(issue.minimum)}` : `at most ${String(issue.maximum)}`;
  return `${name} must be ${bound}, not ${String(value)}`;
}

function unionMessage(path: PolicyPath, value: unknown): string {
  const last = path[path.length - 1];
  const parent = path[path.length - 2];
  if (parent === 'query' || last === 'query') {
    return `query matcher must be a glob string or { any: [globs] }, not ${typeName(value)}`;
  }
  if (last === 'memory')
    return `"memory" must be bytes (an integer) or a string such as 512Mi or 2G, not ${typeName(value)}`;
  if (last === 'cpu')
    return `"cpu" must be cores (a number such as 0.5) or millicores such as "500m", not ${typeName(value)}`;
  if (last === 'run_as_user' || last === 'run_as_group') {
    return `"${String(last)}" must be a name or a numeric id, not ${typeName(value)}`;
  }
  return `${fieldName(path)} has the wrong type (${typeName(value)})`;
}
