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
 */
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
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
          const msg = `${controller}: no cgroup hierarchy offers this controller`;
          if (!bestEffort)
            throw new CgroupError(
              `cannot apply the ${controller} limit: ${msg.split(': ')[1]} (run carapace doctor; or pass --best-effort-limits)`,
            );
          report.skipped.push(msg);
          continue;
        }
        if (!existsSync(dir.path)) {
          try {
            if (dir.v2) enableV2Controllers(dir.root, controller);
            mkdirSync(dir.path, { recursive: true });
          } catch (err) {
            const why = (err as NodeJS.ErrnoException).code ?? String(err);
            if (!bestEffort) {
              throw new CgroupError(
                `cannot create the cgroup for the ${controller} limit at ${dir.path} (${why}): run as root or delegate a cgroup v2 subtree; or pass --best-effort-limits`,
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

function controllerDir(
  controller: Controller,
  name: string,
  layout: CgroupLayout,
): { path: string; v2: boolean; root: string } | null {
  if (layout.v2Mount && layout.v2Controllers.includes(controller)) {
    return { path: join(layout.v2Mount, 'carapace', name), v2: true, root: layout.v2Mount };
  }
  const v1 = layout.v1Mounts[controller];
  if (v1) return { path: join(v1, 'carapace', name), v2: false, root: v1 };
  return null;
}

function enableV2Controllers(root: string, controller: Controller): void {
  // A v2 controller must be enabled in every ancestor's subtree_control for a leaf to use it.
  writeFileSync(join(root, 'cgroup.subtree_control'), `+${controller}`);
  mkdirSync(join(root, 'carapace'), { recursive: true });
  writeFileSync(join(root, 'carapace', 'cgroup.subtree_control'), `+${controller}`);
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
