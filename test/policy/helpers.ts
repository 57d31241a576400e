/** Shared helpers of the policy tests: where the compat fixtures and built-in policies live. */
import { readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parsePolicy } from '../../src/policy/index.js';
import type { Policy } from '../../src/policy/index.js';

export const REPO = resolve(import.meta.dirname, '..', '..');

/** Real NemoClaw and OpenShell files, copied verbatim into the repository (see its README). */
export const COMPAT = join(REPO, 'test', 'policy', 'fixtures', 'compat');

export const POLICIES = join(REPO, 'policies');

export function yamlFiles(dir: string): string[] {
  return readdirSync(dir)
    .filter((f) => f.endsWith('.yaml'))
    .sort()
    .map((f) => join(dir, f));
}

/** Parses text that must be valid; fails the test with every diagnostic otherwise. */
export function policyOf(text: string): Policy {
  const r = parsePolicy(text, 'test.yaml');
  if (!r.ok) throw new Error(r.diagnostics.map((d) => `${d.line}:${d.col}: ${d.message}`).join('\n'));
  return r.policy;
}
