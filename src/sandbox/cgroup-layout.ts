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
}

/** The controllers Carapace's limits use. */
export const LIMIT_CONTROLLERS = ['memory', 'pids', 'cpu'] as const;

export function readCgroupLayout(mountsText = readFileSync('/proc/self/mounts', 'utf8')): CgroupLayout {
  let v2Mount: string | null = null;
  const v1Mounts: Record<string, string> = {};
  for (const line of mountsText.split('\n')) {
    const [, mountPoint, fsType, options] = line.split(' ');
    if (!mountPoint || !options) continue;
    const path = unescapeMountPath(mountPoint);
    if (fsType === 'cgroup2') {
      v2Mount ??= path;
    } else if (fsType === 'cgroup') {
      for (const opt of options.split(',')) {
        if (opt.startsWith('name=')) continue;
        if (['rw', 'ro', 'relatime', 'nosuid', 'nodev', 'noexec', 'noatime'].includes(opt)) continue;
        v1Mounts[opt] ??= path;
      }
    }
  }
  let v2Controllers: string[] = [];
  if (v2Mount) {
    // Controllers available at the root can be enabled (as root) for a subtree we create, so
    // availability, not the current subtree_control, is what decides whether a limit can apply.
    v2Controllers = readWords(`${v2Mount}/cgroup.controllers`);
  }
  return { v2Mount, v2Controllers, v1Mounts };
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
