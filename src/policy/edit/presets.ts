/**
 * Presets: named bundles of network grants, merged into a policy as parsed data.
 *
 * Merge rule (per network policy key of the preset):
 * - the key is absent from the policy → it is added;
 * - the key is present with identical content → nothing changes (adding a preset twice is a no-op);
 * - the key is present with different content → an error naming the key, unless the caller asks
 *   to replace (`onConflict: 'replace'`), which swaps in the preset's version whole.
 * Endpoints are never unioned silently: two different grants under one name is a conflict the
 * user resolves, not something the merge guesses at.
 * Removing a preset removes each of its keys whose content is still the preset's; a key edited
 * since is a conflict unless `force` is set; a key already gone is skipped.
 */
import { existsSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isDeepStrictEqual } from 'node:util';
import { policyErrorAt } from '../diagnostics.js';
import { loadPresetFile } from '../load/loader.js';
import { closest } from '../load/schema-issues.js';
import type { NetworkPolicy, Policy, Preset } from '../schema/schema.js';

export interface PresetSummary {
  name: string;
  description: string;
  file: string;
}

/** The repository's (or installed package's) `policies/` directory. */
export function builtinPoliciesDir(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const candidate = join(dir, 'policies');
    if (existsSync(join(candidate, 'presets'))) return candidate;
    dir = dirname(dir);
  }
  throw policyErrorAt('policies/', 'cannot find the built-in policies directory (policies/presets)');
}

export function listPresets(dir = join(builtinPoliciesDir(), 'presets')): PresetSummary[] {
  return readdirSync(dir)
    .filter((f) => f.endsWith('.yaml') || f.endsWith('.yml'))
    .sort()
    .map((f) => {
      const file = join(dir, f);
      const preset = loadPresetFile(file);
      return { name: preset.preset.name, description: preset.preset.description ?? '', file };
    });
}

/**
 * A preset name that names no built-in preset: bad input (exit 2, a 400 from the API), said in
 * one line with a suggestion. Not a PolicyError: that one is `file: message`, and a name is no file
 * (it printed `nmp: unknown preset "nmp" …`).
 */
export class UnknownPresetError extends Error {
  override name = 'UnknownPresetError';
  readonly code = 'UNKNOWN_PRESET';
  readonly exitCode = 2;
  constructor(
    readonly preset: string,
    readonly suggestion: string | null,
  ) {
    const hint = suggestion !== null ? `did you mean "${suggestion}"? ` : '';
    super(`unknown preset "${preset}" (${hint}carapace policy presets lists them)`);
  }
}

/** Finds a built-in preset by name; throws UnknownPresetError (with a suggestion) when there is none. */
export function findPreset(name: string, dir?: string): PresetSummary {
  const all = listPresets(dir);
  const found = all.find((p) => p.name === name);
  if (found !== undefined) return found;
  throw new UnknownPresetError(
    name,
    closest(
      name,
      all.map((p) => p.name),
    ),
  );
}

export function loadBuiltinPreset(name: string, dir?: string): Preset {
  return loadPresetFile(findPreset(name, dir).file);
}

export type PresetAction = { key: string; action: 'add' | 'replace' | 'keep' | 'remove' | 'skip' };

export interface PresetMergeOptions {
  onConflict?: 'error' | 'replace';
}

/** Decides what merging `preset` does to each key; throws PolicyError on a conflict. */
export function planPresetMerge(
  existing: Readonly<Record<string, NetworkPolicy>>,
  preset: Preset,
  options: PresetMergeOptions = {},
): PresetAction[] {
  const conflicts: string[] = [];
  const plan = Object.entries(preset.network_policies).map(([key, value]): PresetAction => {
    const current = existing[key];
    if (current === undefined) return { key, action: 'add' };
    if (isDeepStrictEqual(current, value)) return { key, action: 'keep' };
    if (options.onConflict === 'replace') return { key, action: 'replace' };
    conflicts.push(key);
    return { key, action: 'keep' };
  });
  if (conflicts.length > 0) {
    throw policyErrorAt(
      preset.preset.name,
      `preset "${preset.preset.name}" conflicts with the policy: network policy ${conflicts.map((k) => `"${k}"`).join(', ')} ` +
        "already exists with different content; edit or remove it first, or replace it with the preset's version",
    );
  }
  return plan;
}

/** Decides what removing `preset` does to each key; throws PolicyError when a key was edited. */
export function planPresetRemoval(
  existing: Readonly<Record<string, NetworkPolicy>>,
  preset: Preset,
  force = false,
): PresetAction[] {
  const edited: string[] = [];
  const plan = Object.entries(preset.network_policies).map(([key, value]): PresetAction => {
    const current = existing[key];
    if (current === undefined) return { key, action: 'skip' };
    if (!force && !isDeepStrictEqual(current, value)) edited.push(key);
    return { key, action: 'remove' };
  });
  if (edited.length > 0) {
    throw policyErrorAt(
      preset.preset.name,
      `network policy ${edited.map((k) => `"${k}"`).join(', ')} differs from preset "${preset.preset.name}" ` +
        '(edited after it was added); remove it explicitly, or force the removal',
    );
  }
  return plan;
}

/** Merges a preset into a policy (as data) and returns the new policy; the input is not changed. */
export function mergePreset(policy: Policy, preset: Preset, options: PresetMergeOptions = {}): Policy {
  const existing = policy.network_policies ?? {};
  const next: Record<string, NetworkPolicy> = { ...existing };
  for (const { key, action } of planPresetMerge(existing, preset, options)) {
    const value = preset.network_policies[key];
    if ((action === 'add' || action === 'replace') && value !== undefined) next[key] = structuredClone(value);
  }
  return { ...policy, network_policies: next };
}

/** Removes a preset's grants from a policy (as data) and returns the new policy. */
export function removePreset(policy: Policy, preset: Preset, force = false): Policy {
  const next: Record<string, NetworkPolicy> = { ...(policy.network_policies ?? {}) };
  for (const { key, action } of planPresetRemoval(next, preset, force)) {
    if (action === 'remove') delete next[key];
  }
  return { ...policy, network_policies: next };
}
