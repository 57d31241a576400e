/**
 * A tier asked for again on a sandbox that exists (`carapace onboard --tier T`, rerun). A tier is
 * the set of network entries the blueprint's plan gives it (restricted: none; balanced: the base
 * policy's and the blueprint's presets; open: those and the package registries), and nothing
 * else: the static sections (files, process, limits) are the same for every tier. So a change of
 * tier is a change of network entries, which the gateway applies live through a policy update of
 * the latest revision — no restart, audited, one revision:
 *
 * - an entry the new tier's plan has and the sandbox lacks is added;
 * - an entry another tier's plan has and the new tier's does not is removed, as the sandbox has
 *   it now (rules approved into it since go with it: the user asked for the tier);
 * - an entry no tier's plan has (an approved rule's own entry, a preset added with --preset) is
 *   left as it is, and so is an entry of a preset the user asked for by name.
 *
 * Computed from the sandbox's current policy, not from a record of its tier, so it is right after
 * any edit, and a tier the sandbox already has changes nothing (no revision).
 */
import { parse as parseYaml, stringify } from 'yaml';
import { loadBuiltinPreset } from '../policy/index.js';
import { composePolicy, TIERS, type Tier } from './sandbox-plan.js';
import type { Blueprint } from './schema.js';

type Entries = Record<string, unknown>;

export interface TierChange {
  add: Entries;
  remove: Entries;
}

function networkOf(policyText: string): Entries {
  const data = parseYaml(policyText) as { network_policies?: Entries | null } | null;
  return data?.network_policies ?? {};
}

/** The network entries the plan of `b` gives `tier` (without presets asked for by name). */
function tierEntries(b: Blueprint, baseText: string, tier: Tier): Entries {
  return networkOf(
    composePolicy(b, baseText, { sandbox: 'tier', route: null, tier, presets: [], hostPorts: {}, token: '' }),
  );
}

/** What moving the sandbox whose policy is `currentText` to `tier` adds and removes. */
export function tierChange(
  b: Blueprint,
  baseText: string,
  tier: Tier,
  userPresets: readonly string[],
  currentText: string,
): TierChange {
  const current = networkOf(currentText);
  const target = tierEntries(b, baseText, tier);
  const kept = new Set(userPresets.flatMap((p) => Object.keys(loadBuiltinPreset(p).network_policies)));
  const add: Entries = {};
  for (const [key, value] of Object.entries(target)) if (!(key in current)) add[key] = value;
  const remove: Entries = {};
  for (const other of TIERS) {
    if (other === tier) continue;
    for (const key of Object.keys(tierEntries(b, baseText, other)))
      if (key in current && !(key in target) && !kept.has(key)) remove[key] = current[key];
  }
  return { add, remove };
}

/** The change as the gateway's policy operations (presets given as text), or [] when there is none. */
export function tierOperations(change: TierChange, tier: Tier): object[] {
  const preset = (entries: Entries, what: string) =>
    stringify({ preset: { name: `tier-${tier}`, description: what }, network_policies: entries });
  const ops: object[] = [];
  if (Object.keys(change.remove).length > 0)
    ops.push({
      op: 'remove-preset',
      preset: { text: preset(change.remove, `what tier ${tier} does not allow`), file: `tier-${tier}` },
      force: true,
    });
  if (Object.keys(change.add).length > 0)
    ops.push({
      op: 'add-preset',
      preset: { text: preset(change.add, `what tier ${tier} allows`), file: `tier-${tier}` },
    });
  return ops;
}
