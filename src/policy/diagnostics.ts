/**
 * Diagnostics: what the policy engine reports about a bad policy, and the one typed error it throws.
 *
 * Every problem is a `{ file, line, col, message }` (1-based), rendered `file:line:col: message`.
 * A problem found in a policy that did not come from YAML text (built in memory) has no position:
 * line and col are 0 and the rendering is `file: path: message`.
 */

export interface Diagnostic {
  file: string;
  /** 1-based line; 0 when the policy has no source text. */
  line: number;
  /** 1-based column; 0 when the policy has no source text. */
  col: number;
  message: string;
}

/** A path into the policy data, e.g. `['network_policies', 'github', 'endpoints', 0, 'host']`. */
export type PolicyPath = readonly (string | number)[];

/**
 * A problem found by a check that works on data, before it has a position. `at: 'key'` points the
 * diagnostic at the key of the entry named by `path` (an unknown or duplicate key), `'value'` (the
 * default) at its value.
 */
export interface PolicyIssue {
  path: PolicyPath;
  message: string;
  at?: 'key' | 'value';
}

export function formatDiagnostic(d: Diagnostic): string {
  if (d.line > 0) return `${d.file}:${d.line}:${d.col}: ${d.message}`;
  return `${d.file}: ${d.message}`;
}

/** Renders a path the way a user would write it: `network_policies.github.endpoints[0].host`. */
export function formatPath(path: PolicyPath): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else if (/^[A-Za-z0-9_-]+$/.test(seg)) out += out === '' ? seg : `.${seg}`;
    else out += `[${JSON.stringify(seg)}]`;
  }
  return out;
}

/** Thrown by `loadPolicyFile`, `compilePolicy` and the policy operations; the CLI exits with `exitCode`. */
export class PolicyError extends Error {
  override name = 'PolicyError';
  readonly exitCode = 2;
  constructor(readonly diagnostics: readonly Diagnostic[]) {
    super(diagnostics.map(formatDiagnostic).join('\n'));
  }
}

/** One diagnostic with no position, for problems that concern a whole file or an operation. */
export function policyErrorAt(file: string, message: string): PolicyError {
  return new PolicyError([{ file, line: 0, col: 0, message }]);
}

/** Sorts by position, keeping the discovery order for equal positions. */
export function sortDiagnostics(list: Diagnostic[]): Diagnostic[] {
  return list
    .map((d, i) => ({ d, i }))
    .sort((a, b) => a.d.line - b.d.line || a.d.col - b.d.col || a.i - b.i)
    .map(({ d }) => d);
}
