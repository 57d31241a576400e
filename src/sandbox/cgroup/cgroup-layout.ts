/**
 * Where the cgroup hierarchies are mounted and which controllers each offers, from the mount
 * table. Its own module so that a sandbox start, which needs it, does not load the host probes.
 */
import { readFileSync } from 'node:fs';

export interface CgroupLayout {
  /** Mount point of the unified (v2) hierarchy, if any. */
  v2Mount: string | null;
  /** Controllers enabled for children in the v2 hierarchy (`cgroup.subtree_control` of its root). */
  v2Controllers: string[];
  /** v1 controller name → mount point. */
  v1Mounts: Record<string, string>;
  /**
   * Whether some cgroup hierarchy is mounted with `favordynmods`. The kernel's lock that guards
   * moving a task between cgroups is global; without that option every move waits for an RCU
   * grace period (5–20 ms here), which is most of a sandbox start with limits.
   */
  favorDynmods: boolean;
}

/** Mount options of a v1 hierarchy that are not controller names. */
const V1_NON_CONTROLLER_OPTIONS = new Set([
  'rw',
  'ro',
  'relatime',
  'nosuid',
  'nodev',
  'noexec',
  'noatime',
  'none',
  'noprefix',
  'clone_children',
  'xattr',
  'cpuset_v2_mode',
  'favordynmods',
]);

/** The controllers Carapace's limits use. */
export const LIMIT_CONTROLLERS = ['memory', 'pids', 'cpu'] as const;

export function readCgroupLayout(mountsText = readFileSync('/proc/self/mounts', 'utf8')): CgroupLayout {
  let v2Mount: string | null = null;
  const v1Mounts: Record<string, string> = {};
  let favorDynmods = false;
  for (const line of mountsText.split('\n')) {
    const [, mountPoint, fsType, optionText] = line.split(' ');
    if (!mountPoint || !optionText || (fsType !== 'cgroup2' && fsType !== 'cgroup')) continue;
    const path = unescapeMountPath(mountPoint);
    const options = optionText.split(',');
    if (options.includes('favordynmods')) favorDynmods = true;
    if (fsType === 'cgroup2') {
      v2Mount ??= path;
      continue;
    }
    for (const opt of options) {
      if (opt.startsWith('name=') || opt.startsWith('release_agent=')) continue;
      if (V1_NON_CONTROLLER_OPTIONS.has(opt)) continue;
      v1Mounts[opt] ??= path;
    }
  }
  let v2Controllers: string[] = [];
  if (v2Mount) {
    // Controllers available at the root can be enabled (as root) for a subtree we create, so
    // availability, not the current subtree_control, is what decides whether a limit can apply.
    v2Controllers = readWords(`${v2Mount}/cgroup.controllers`);
  }
  return { v2Mount, v2Controllers, v1Mounts, favorDynmods };
}

function readWords(path: string): string[] {
  try {
    return readFileSync(path, 'utf8').split(/\s+/).filter(Boolean);
  } catch {
    return [];
  }
}

function unescapeMountPath(p: string): string {
  return p.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}
