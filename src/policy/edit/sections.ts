/**
 * Which top-level sections differ between two policies, split by what a running sandbox can take.
 *
 * Static sections shape the sandbox itself (mounts, Landlock, identity, cgroup limits, bound ports)
 * and are fixed when it is created; changing them means recreating the sandbox. Dynamic sections
 * are hot-reloaded: a new generation is compiled and swapped in atomically.
 */
import { isDeepStrictEqual } from 'node:util';
import type { Policy } from '../schema/schema.js';

export const STATIC_SECTIONS = [
  'filesystem_policy',
  'landlock',
  'process',
  'limits',
  'listen_ports',
] as const;
export const DYNAMIC_SECTIONS = ['network_policies', 'inference'] as const;

export type StaticSection = (typeof STATIC_SECTIONS)[number];
export type DynamicSection = (typeof DYNAMIC_SECTIONS)[number];

export interface SectionChanges {
  /** Sections that need the sandbox recreated. */
  static: StaticSection[];
  /** Sections a running sandbox reloads. */
  dynamic: DynamicSection[];
  /** True when only dynamic sections differ (or nothing does): the change can be hot-reloaded. */
  hotReloadable: boolean;
}

/** An absent section and its empty form mean the same thing (`network_policies: {}` = none). */
function normalized(value: unknown): unknown {
  if (value === undefined || value === null) return undefined;
  if (Array.isArray(value) && value.length === 0) return undefined;
  if (typeof value === 'object' && Object.keys(value).length === 0) return undefined;
  return value;
}

export function changedSections(before: Policy, after: Policy): SectionChanges {
  const differs = (k: keyof Policy): boolean =>
    !isDeepStrictEqual(normalized(before[k]), normalized(after[k]));
  const staticChanged = STATIC_SECTIONS.filter(differs);
  const dynamicChanged = DYNAMIC_SECTIONS.filter(differs);
  const versionChanged = before.version !== after.version;
  return {
    static: staticChanged,
    dynamic: dynamicChanged,
    hotReloadable: staticChanged.length === 0 && !versionChanged,
  };
}
