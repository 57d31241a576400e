/**
 * Resource limits through cgroups: memory, pids and cpu for the whole process tree of a sandbox.
 *
 * Threat: a fork bomb or a memory hog inside one sandbox starving the host or other sandboxes.
 * Each sandbox gets its own cgroup, entered by its init before the agent exists (the launcher holds
 * the init on bwrap's --block-fd until it has been moved), so every descendant is inside.
 *
 * cgroup v2 is used for a controller where the unified hierarchy offers it; otherwise that
 * controller's v1 hierarchy (hybrid hosts, like Debian with a v1 layout, have both). A limit that
 * cannot be applied is an error unless the caller asked for best effort.
 *
 * Where the sandbox's cgroup goes (cgroupParent): as root, `<mount>/carapace/`. A normal user
 * needs a subtree of their own: on a v1 hierarchy, `<mount>/carapace/user-<uid>/` made by root
 * and owned by the user (v1 lets the owner of a cgroup create children and move their own
 * processes into them); on the v2 hierarchy, the delegated subtree the user's processes already
 * live in (systemd's `Delegate=yes`): v2 moves a process only within a subtree whose common
 * ancestor the mover may write, so a directory made for the user elsewhere would not do.
 */
import {
  existsSync,
  mkdirSync,
  readFileSync,
  rmdirSync,
  statSync,
  writeFileSync,
  accessSync,
  constants,
} from 'node:fs';
import { dirname, join, relative, sep, isAbsolute } from 'node:path';
import { readCgroupLayout, type CgroupLayout } from './cgroup-layout.js';

export interface ResourceLimits {
  memoryBytes?: number | undefined;
  pids?: number | undefined;
  /** CPU time per second, in thousandths of a core (1000 = one core). */
  cpuMillis?: number | undefined;
  openFiles?: number | undefined;
}

type Controller = 'memory' | 'pids' | 'cpu';

export class CgroupError extends Error {
  override name = 'CgroupError';
  readonly code = 'CGROUP_UNAVAILABLE';
  readonly exitCode = 1;
}

const CPU_PERIOD_US = 100_000;

export interface AppliedLimits {
  /** Directories of the sandbox's cgroups (one per hierarchy used). */
  dirs: string[];
  /** What was applied, by controller, e.g. `memory: v1 536870912`. */
  applied: string[];
  /** Limits that were asked for but could not be applied (best effort only). */
  skipped: string[];
}

export class SandboxCgroup {
  private constructor(
    private readonly dirs: string[],
    readonly report: AppliedLimits,
  ) {}

  /**
   * The cgroups of a running sandbox this process did not start (a restarted gateway re-adopting
   * it), found by their key (the run record's `cgroupKey`) in every hierarchy.
   */
  static existing(key: string, layout = readCgroupLayout()): SandboxCgroup {
    const dirs: string[] = [];
    for (const controller of ['memory', 'pids', 'cpu'] as const) {
      const parent = cgroupParent(controller, layout);
      const dir = parent ? join(parent.parent, key) : null;
      if (dir && existsSync(dir) && !dirs.includes(dir)) dirs.push(dir);
    }
    return new SandboxCgroup(dirs, { dirs, applied: [], skipped: [] });
  }

  /** The directories of the sandbox's cgroups, for the run record (a crash sweep removes them). */
  get paths(): readonly string[] {
    return this.dirs;
  }

  /**
   * Creates the cgroups for `name` and writes the limits. With `bestEffort`, a controller that is
   * unavailable is recorded in `report.skipped` instead of failing.
   */
  static create(name: string, limits: ResourceLimits, bestEffort: boolean, givenLayout?: CgroupLayout) {
    const wanted: Controller[] = [];
    if (limits.memoryBytes !== undefined) wanted.push('memory');
    if (limits.pids !== undefined) wanted.push('pids');
    if (limits.cpuMillis !== undefined) wanted.push('cpu');
    const dirs: string[] = [];
    const report: AppliedLimits = { dirs, applied: [], skipped: [] };
    const created: string[] = [];
    // Read only when a limit needs it: the mount table is not free to parse.
    const layout = wanted.length === 0 ? null : (givenLayout ?? readCgroupLayout());
    try {
      for (const controller of wanted) {
        const dir = controllerDir(controller, name, layout!);
        if (!dir) {
          const msg = `${controller}: ${reasonNone(controller, layout!)}`;
          if (!bestEffort)
            throw new CgroupError(
              `cannot apply the ${controller} limit: ${msg.slice(controller.length + 2)} (run carapace doctor; or pass --best-effort-limits)`,
            );
          report.skipped.push(msg);
          continue;
        }
        if (!existsSync(dir.path)) {
          try {
            if (dir.v2) enableV2Controllers(dir.root, dir.parent, controller);
            mkdirSync(dir.path, { recursive: true });
          } catch (err) {
            const why = (err as NodeJS.ErrnoException).code ?? String(err);
            if (!bestEffort) {
              throw new CgroupError(
                `cannot create the cgroup for the ${controller} limit at ${dir.path} (${why}): run as root or get a cgroup subtree delegated (carapace doctor says how); or pass --best-effort-limits`,
              );
            }
            report.skipped.push(`${controller}: ${why}`);
            continue;
          }
          created.push(dir.path);
        }
        if (!dirs.includes(dir.path)) dirs.push(dir.path);
        writeLimit(controller, dir.path, dir.v2, limits);
        report.applied.push(`${controller}: ${dir.v2 ? 'v2' : 'v1'} ${describe(controller, limits)}`);
      }
    } catch (err) {
      for (const d of created.reverse()) tryRmdir(d);
      throw err;
    }
    return new SandboxCgroup(dirs, report);
  }

  /** Moves a process (the sandbox's init, before it starts the agent) into every cgroup. */
  enter(pid: number): void {
    for (const d of this.dirs) writeFileSync(join(d, 'cgroup.procs'), `${pid}\n`);
  }

  /** Whether the memory controller killed something for running out of memory. */
  oomKills(): number {
    for (const d of this.dirs) {
      for (const file of ['memory.events', 'memory.oom_control']) {
        try {
          const m = /oom_kill (\d+)/.exec(readFileSync(join(d, file), 'utf8'));
          if (m) return Number(m[1]);
        } catch {
          // not this hierarchy's file
        }
      }
    }
    return 0;
  }

  /** Kills whatever is left inside and removes the cgroups. Safe to call twice. */
  destroy(): void {
    for (const d of this.dirs) {
      killAll(d);
      tryRmdir(d);
    }
    this.dirs.length = 0;
  }
}

/** Where a sandbox's cgroup for `controller` goes, or null when no hierarchy offers it to us. */
function controllerDir(
  controller: Controller,
  name: string,
  layout: CgroupLayout,
): { path: string; v2: boolean; root: string; parent: string } | null {
  const parent = cgroupParent(controller, layout);
  return parent ? { ...parent, path: join(parent.parent, name) } : null;
}

export interface CgroupParent {
  /** The hierarchy's mount point. */
  root: string;
  /** The directory sandbox cgroups are made in. */
  parent: string;
  v2: boolean;
}

/**
 * The directory this process makes sandbox cgroups for `controller` in (see the file's comment),
 * or null: the controller is in no hierarchy, or this user has no subtree of it.
 */
export function cgroupParent(
  controller: Controller,
  layout: CgroupLayout,
  uid = process.getuid?.() ?? 0,
): CgroupParent | null {
  if (layout.v2Mount && layout.v2Controllers.includes(controller)) {
    const root = layout.v2Mount;
    if (uid === 0) return { root, parent: join(root, 'carapace'), v2: true };
    const delegated = delegatedV2Subtree(root, uid);
    return delegated ? { root, parent: join(delegated, 'carapace'), v2: true } : null;
  }
  const root = layout.v1Mounts[controller];
  if (!root) return null;
  if (uid === 0) return { root, parent: join(root, 'carapace'), v2: false };
  const own = join(root, 'carapace', `user-${uid}`);
  return ownedAndWritable(own, uid) ? { root, parent: own, v2: false } : null;
}

/** Why cgroupParent gave null, in words for an error or for doctor. */
export function reasonNone(
  controller: Controller,
  layout: CgroupLayout,
  uid = process.getuid?.() ?? 0,
): string {
  const inV2 = layout.v2Mount !== null && layout.v2Controllers.includes(controller);
  if (!inV2 && !layout.v1Mounts[controller]) return 'no cgroup hierarchy offers this controller';
  if (uid === 0) return 'unavailable';
  return inV2
    ? `uid ${uid} has no delegated cgroup v2 subtree (systemd: run under a unit with Delegate=yes)`
    : `uid ${uid} has no cgroup of its own in the ${controller} hierarchy (as root: mkdir ${join(layout.v1Mounts[controller]!, 'carapace', `user-${uid}`)} and chown it to ${uid})`;
}

/**
 * The top of the v2 subtree delegated to `uid` that holds this process: walking up from our own
 * cgroup while the directory and its cgroup.procs and cgroup.subtree_control are the user's.
 */
function delegatedV2Subtree(root: string, uid: number): string | null {
  let own: string | undefined;
  try {
    own = /^0::(\/.*)$/m.exec(readFileSync('/proc/self/cgroup', 'utf8'))?.[1];
  } catch {
    return null;
  }
  if (own === undefined) return null;
  let top: string | null = null;
  for (let dir = join(root, own); dir.startsWith(root) && dir !== root; dir = dirname(dir)) {
    const delegated =
      ownedAndWritable(dir, uid) &&
      ownedAndWritable(join(dir, 'cgroup.procs'), uid) &&
      ownedAndWritable(join(dir, 'cgroup.subtree_control'), uid);
    if (!delegated) break;
    top = dir;
  }
  return top;
}

function ownedAndWritable(path: string, uid: number): boolean {
  try {
    if (statSync(path).uid !== uid) return false;
    accessSync(path, constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

function enableV2Controllers(root: string, parent: string, controller: Controller): void {
  // A v2 controller must be enabled in every ancestor's subtree_control for a leaf to use it: from
  // the hierarchy's root (or the top of a delegated subtree) down to our parent directory.
  const chain: string[] = [];
  for (let dir = dirname(parent); ; dir = dirname(dir)) {
    chain.unshift(dir);
    if (dir === root || dir === '/' || (process.getuid?.() ?? 0) !== 0) break;
  }
  for (const dir of chain) writeFileSync(join(dir, 'cgroup.subtree_control'), `+${controller}`);
  mkdirSync(parent, { recursive: true });
  writeFileSync(join(parent, 'cgroup.subtree_control'), `+${controller}`);
}

/**
 * Kills what is left in a cgroup directory and removes it, for the crash sweep. Only a directory
 * below a `carapace` directory of a mounted cgroup hierarchy is touched; returns why not, or null.
 */
export function destroyCgroupDir(dir: string, layout = readCgroupLayout()): string | null {
  const roots = [layout.v2Mount, ...Object.values(layout.v1Mounts)].filter((r): r is string => r !== null);
  const inside = roots.some((r) => {
    const rel = relative(r, dir);
    return (
      !isAbsolute(rel) &&
      !rel.startsWith('..') &&
      rel.split(sep).includes('carapace') &&
      rel.split(sep).length >= 2
    );
  });
  if (!inside) return 'not a Carapace cgroup, left alone';
  if (!existsSync(dir)) return null;
  killAll(dir);
  tryRmdir(dir);
  return existsSync(dir) ? 'still busy' : null;
}

function writeLimit(controller: Controller, dir: string, v2: boolean, limits: ResourceLimits): void {
  if (controller === 'memory') {
    const bytes = String(limits.memoryBytes);
    if (v2) {
      writeFileSync(join(dir, 'memory.max'), bytes);
      writeIfExists(join(dir, 'memory.swap.max'), '0');
    } else {
      writeFileSync(join(dir, 'memory.limit_in_bytes'), bytes);
      // Without this the hog would escape into swap where the host has any.
      writeIfExists(join(dir, 'memory.memsw.limit_in_bytes'), bytes);
      // v1 charges a cgroup's TCP socket buffers only once this is written (v2 always does): the
      // sandbox's own sockets, to the relay and beyond, then count against it.
      writeIfExists(join(dir, 'memory.kmem.tcp.limit_in_bytes'), bytes);
    }
  } else if (controller === 'pids') {
    writeFileSync(join(dir, 'pids.max'), String(limits.pids));
  } else {
    const quota = Math.max(1000, Math.round(((limits.cpuMillis ?? 1000) * CPU_PERIOD_US) / 1000));
    if (v2) {
      writeFileSync(join(dir, 'cpu.max'), `${quota} ${CPU_PERIOD_US}`);
    } else {
      writeFileSync(join(dir, 'cpu.cfs_period_us'), String(CPU_PERIOD_US));
      writeFileSync(join(dir, 'cpu.cfs_quota_us'), String(quota));
    }
  }
}

function describe(controller: Controller, limits: ResourceLimits): string {
  if (controller === 'memory') return `${limits.memoryBytes} bytes`;
  if (controller === 'pids') return `${limits.pids} processes`;
  return `${limits.cpuMillis}m cpu`;
}

function writeIfExists(path: string, value: string): void {
  if (existsSync(path)) writeFileSync(path, value);
}

function killAll(dir: string): void {
  if (existsSync(join(dir, 'cgroup.kill'))) {
    try {
      writeFileSync(join(dir, 'cgroup.kill'), '1');
    } catch {
      // fall through to the per-pid loop
    }
  }
  for (let round = 0; round < 100; round++) {
    let pids: number[];
    try {
      pids = readFileSync(join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
    } catch {
      return;
    }
    if (pids.length === 0) return;
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10);
  }
}

function tryRmdir(dir: string): void {
  for (let i = 0; i < 50; i++) {
    try {
      rmdirSync(dir);
      return;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return;
      if (code !== 'EBUSY') return;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10);
    }
  }
}
