/**
 * Crashes leave nothing behind. A `carapace run` killed with SIGKILL takes its sandbox with it
 * (bwrap's --die-with-parent), but not what it made on the host: cgroup directories, the runtime
 * and proxy-socket directories, the lock, a temporary workspace and storage, the uid record. Each
 * run writes these down in its lock file as it makes them (sandbox-lock.ts); the next Carapace
 * command that starts sandboxes (or `carapace doctor`) finds the records whose owner is gone and
 * removes what they list.
 *
 * Security assumptions: the records live in Carapace's own run directory (root's or the user's,
 * never mounted into a sandbox), so they are trusted for what they say; still, a path is removed
 * only where Carapace would have made it (below the state or run directory, under the sandbox's
 * own name; cgroups below a `carapace` directory of a cgroup mount), so a damaged record cannot
 * turn the sweep against another path. Removal never follows a symlink (rmSync removes a link,
 * not its target).
 */
import { readdirSync, rmSync } from 'node:fs';
import { join, relative, sep, isAbsolute } from 'node:path';
import { cgroupParent, destroyCgroupDir } from './cgroup/cgroup.js';
import { LIMIT_CONTROLLERS, readCgroupLayout } from './cgroup/cgroup-layout.js';
import type { IdentityRegistry } from './identity/identity.js';
import { ownerAlive, readRunRecord, type RunRecord } from './sandbox-lock.js';
import type { StateDirs } from './state-dirs.js';

/** A run whose owner died: what was swept, for the caller's audit ("sandbox lost"). */
export interface LostRun {
  record: RunRecord;
  /** What could not be removed (and why); empty when everything went. */
  left: string[];
}

const beneath = (p: string | undefined, root: string): p is string => {
  if (p === undefined || !isAbsolute(p)) return false;
  const rel = relative(root, p);
  return rel !== '' && rel !== '..' && !rel.startsWith(`..${sep}`) && !isAbsolute(rel);
};

/** Sweeps every dead run of this state directory. Cheap when there is none: one readdir. */
export async function sweepDeadRuns(
  dirs: StateDirs,
  identities: IdentityRegistry | null,
): Promise<LostRun[]> {
  const lockDir = join(dirs.run, 'sandboxes');
  let names: string[];
  try {
    names = readdirSync(lockDir).filter((f) => f.endsWith('.lock'));
  } catch {
    return [];
  }
  const lost: LostRun[] = [];
  for (const file of names) {
    const path = join(lockDir, file);
    const record = readRunRecord(path);
    if (record === null || ownerAlive(record)) continue;
    lost.push({ record, left: await sweepRun(record, dirs, identities) });
    rmSync(path, { force: true });
  }
  return lost;
}

/**
 * Removes what a run made on the host, as its record lists it: the crash sweep's work, and a
 * gateway's clean-up of a sandbox it re-adopted (whose start it did not make). Returns what could
 * not be removed.
 */
export async function releaseRun(
  r: RunRecord,
  dirs: StateDirs,
  identities: IdentityRegistry | null,
): Promise<string[]> {
  return sweepRun(r, dirs, identities);
}

async function sweepRun(
  r: RunRecord,
  dirs: StateDirs,
  identities: IdentityRegistry | null,
): Promise<string[]> {
  const left: string[] = [];
  const remove = (p: string | undefined, root: string, what: string) => {
    if (p === undefined) return;
    if (!beneath(p, root) || !p.split(sep).includes(r.name)) {
      left.push(`${what} ${p}: not where Carapace makes one for "${r.name}", left alone`);
      return;
    }
    try {
      rmSync(p, { recursive: true, force: true });
    } catch (err) {
      left.push(`${what} ${p}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
    }
  };
  if (r.cgroupKey !== undefined && /^[a-z0-9][a-z0-9_.-]*$/.test(r.cgroupKey)) {
    const layout = readCgroupLayout();
    for (const controller of LIMIT_CONTROLLERS) {
      const parent = cgroupParent(controller, layout);
      if (!parent) continue;
      const dir = join(parent.parent, r.cgroupKey);
      const why = destroyCgroupDir(dir, layout);
      if (why) left.push(`cgroup ${dir}: ${why}`);
    }
  }
  remove(r.runtime, join(dirs.run, 'sandboxes'), 'runtime directory');
  remove(r.net, join(dirs.run, 'net'), 'proxy socket directory');
  remove(r.tempWorkspace, join(dirs.state, 'sandboxes'), 'temporary workspace');
  remove(r.ephemeralStorage, join(dirs.state, 'sandboxes'), 'storage');
  if (r.ephemeralStorage !== undefined && identities && r.state === dirs.state) {
    await identities.release({ state: r.state, name: r.name });
  }
  return left;
}
