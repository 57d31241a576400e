/**
 * The sandbox's view of the filesystem: what the policy does not list does not exist inside.
 *
 * Security assumptions:
 * - read_only paths are the host's paths, bound read-only at the same place; a host path that is a
 *   symlink (`/lib → usr/lib` on merged-/usr systems) is recreated as the same symlink, so its
 *   target must be listed too to be reachable.
 * - read_write paths are never the host's path of that name: /sandbox is the workspace, /tmp a
 *   private tmpfs, /dev a minimal devtmpfs made by bwrap, anything else a directory of the sandbox's
 *   own storage. Only an explicit --mount maps a host directory writable.
 * - /proc is always a fresh procfs of the sandbox's pid namespace; it shows only sandbox processes.
 * - Memory-backed filesystems are bounded, or an agent could fill the host's memory through them
 *   whatever its cgroup (tmpfs pages outlive the process that wrote them): /tmp gets a size
 *   (tmpSizeBytes), /dev/shm its own 64 MiB tmpfs, and bwrap's /dev and root tmpfs are remounted
 *   read-only once everything is in place - without Landlock (an old kernel, best_effort) they
 *   would otherwise be writable and unbounded.
 * - Secrets in /etc are masked by an unreadable empty file even though the user namespace already
 *   hides their owner; /etc/passwd and /etc/group are synthesized with the `sandbox` user.
 * - A read-only path nested in a read-write one (e.g. /sandbox/.openclaw in /sandbox) is enforced by
 *   the read-only bind mount: Landlock rules only add rights, so Landlock alone cannot subtract it.
 */
import { existsSync, lstatSync, readdirSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import type { HostMount } from './spec.js';
import { WORKSPACE_PATH } from './spec.js';

export type MountOp =
  | { kind: 'ro-bind' | 'bind'; host: string; path: string }
  | { kind: 'symlink'; target: string; path: string }
  | { kind: 'tmpfs'; path: string; readOnly: boolean; sizeBytes?: number }
  | { kind: 'proc' | 'dev'; path: string }
  | { kind: 'dir'; path: string };

export interface MountPlan {
  ops: MountOp[];
  /** The Landlock allowlist, repeating the mount allowlist as a second layer. */
  landlockReadOnly: string[];
  landlockReadWrite: string[];
  /** Listed paths that do not exist on the host and were left out. */
  missing: string[];
  /** Directories inside the workspace or the sandbox's storage that must exist before the start. */
  ensureDirs: string[];
}

export interface MountPlanInput {
  readOnly: string[];
  readWrite: string[];
  workspace: string;
  /** Host directory backing read-write paths other than /sandbox, /tmp and /dev. */
  storage: string;
  mounts: HostMount[];
  /** Synthesized files: in-sandbox path → host file (passwd, group, hosts, CA bundle, masks). */
  files: Map<string, string>;
  /** Size of the /tmp tmpfs (see tmpSizeBytes). */
  tmpBytes: number;
}

/** /dev/shm's own tmpfs (POSIX shared memory, semaphores): Docker's default size. */
export const DEV_SHM_BYTES = 64 * 2 ** 20;
/** /tmp's size when the policy sets no memory limit. */
export const DEFAULT_TMP_BYTES = 2 ** 30;

/**
 * /tmp's size: half the memory limit (its pages count against the sandbox's memory cgroup, and the
 * agent needs the other half to run), or DEFAULT_TMP_BYTES when there is no limit. Larger data
 * belongs in /sandbox, which is on disk.
 */
export function tmpSizeBytes(memoryBytes: number | undefined): number {
  return memoryBytes === undefined ? DEFAULT_TMP_BYTES : Math.floor(memoryBytes / 2);
}

/** Paths masked in /etc by an unreadable empty file (only those that exist on the host). */
export const MASKED_ETC = [
  '/etc/shadow',
  '/etc/gshadow',
  '/etc/shadow-',
  '/etc/gshadow-',
  '/etc/sudoers',
  '/etc/security/opasswd',
];
export const MASKED_ETC_DIRS = ['/etc/sudoers.d'];

const depth = (p: string) => (p === '/' ? 0 : p.split('/').length - 1);
const within = (p: string, root: string) => p === root || p.startsWith(root === '/' ? '/' : root + '/');

export function planMounts(input: MountPlanInput, maskFile: string): MountPlan {
  const plan: MountPlan = {
    ops: [],
    landlockReadOnly: [],
    landlockReadWrite: [],
    missing: [],
    ensureDirs: [],
  };
  const rw = new Set(input.readWrite);
  const all = [...new Set([...input.readOnly, ...input.readWrite])].sort(
    (a, b) => depth(a) - depth(b) || (a < b ? -1 : a > b ? 1 : 0),
  );

  plan.ops.push({ kind: 'proc', path: '/proc' }, { kind: 'dev', path: '/dev' });
  plan.landlockReadOnly.push('/proc');
  plan.landlockReadWrite.push('/dev');

  for (const path of all) {
    if (within(path, '/proc') || within(path, '/dev')) continue; // always present, fresh
    const writable = rw.has(path);
    if (path === '/tmp' && writable) {
      plan.ops.push({ kind: 'tmpfs', path, readOnly: false, sizeBytes: input.tmpBytes });
      plan.landlockReadWrite.push(path);
    } else if (within(path, WORKSPACE_PATH)) {
      const host = join(input.workspace, path.slice(WORKSPACE_PATH.length));
      if (path === WORKSPACE_PATH) {
        plan.ops.push({ kind: writable ? 'bind' : 'ro-bind', host, path });
      } else if (writable) {
        plan.ensureDirs.push(host);
        plan.ops.push({ kind: 'bind', host, path });
      } else if (existsSync(host)) {
        plan.ops.push({ kind: 'ro-bind', host, path });
      } else {
        plan.missing.push(path);
        continue;
      }
      (writable ? plan.landlockReadWrite : plan.landlockReadOnly).push(path);
    } else if (writable) {
      const host = join(input.storage, 'rw', path);
      plan.ensureDirs.push(host);
      plan.ops.push({ kind: 'bind', host, path });
      plan.landlockReadWrite.push(path);
    } else {
      const op = hostPathOp(path);
      if (!op) {
        plan.missing.push(path);
        continue;
      }
      plan.ops.push(op);
      plan.landlockReadOnly.push(path);
    }
  }

  for (const m of input.mounts) {
    plan.ops.push({ kind: m.readOnly ? 'ro-bind' : 'bind', host: m.host, path: m.path });
    (m.readOnly ? plan.landlockReadOnly : plan.landlockReadWrite).push(m.path);
  }

  const etcBound = plan.ops.some((o) => o.path === '/etc');
  if (etcBound) {
    for (const p of MASKED_ETC)
      if (existsSync(p)) plan.ops.push({ kind: 'ro-bind', host: maskFile, path: p });
    for (const p of MASKED_ETC_DIRS)
      if (existsSync(p)) plan.ops.push({ kind: 'tmpfs', path: p, readOnly: true });
    for (const key of readdirSshKeys()) plan.ops.push({ kind: 'ro-bind', host: maskFile, path: key });
  }
  for (const [path, host] of input.files) {
    plan.ops.push({ kind: 'ro-bind', host, path });
    if (!plan.landlockReadOnly.some((r) => within(path, r))) plan.landlockReadOnly.push(path);
  }
  return plan;
}

function hostPathOp(path: string): MountOp | null {
  let st;
  try {
    st = lstatSync(path);
  } catch {
    return null;
  }
  if (st.isSymbolicLink()) return { kind: 'symlink', target: readlinkSync(path), path };
  return { kind: 'ro-bind', host: path, path };
}

function readdirSshKeys(): string[] {
  const dir = '/etc/ssh';
  try {
    // Host private keys: reading them would let an agent impersonate this machine.
    return readdirSync(dir)
      .filter((f) => /key/.test(f) && !f.endsWith('.pub'))
      .map((f) => join(dir, f));
  } catch {
    return [];
  }
}

/** bwrap arguments for a mount plan, in order (parents before children). */
export function mountArgs(plan: MountPlan): string[] {
  const args: string[] = [];
  for (const op of plan.ops) {
    switch (op.kind) {
      case 'ro-bind':
        args.push('--ro-bind', op.host, op.path);
        break;
      case 'bind':
        args.push('--bind', op.host, op.path);
        break;
      case 'symlink':
        args.push('--symlink', op.target, op.path);
        break;
      case 'tmpfs':
        if (op.sizeBytes !== undefined) args.push('--size', String(op.sizeBytes));
        args.push('--tmpfs', op.path);
        if (op.readOnly) args.push('--remount-ro', op.path);
        break;
      case 'proc':
        args.push('--proc', op.path);
        break;
      case 'dev':
        // bwrap's /dev is a tmpfs the sandbox owns: read-only, with a bounded tmpfs of its own for
        // shared memory. The device nodes are bind mounts, which stay writable.
        args.push('--dev', op.path);
        args.push('--size', String(DEV_SHM_BYTES), '--tmpfs', `${op.path}/shm`, '--remount-ro', op.path);
        break;
      case 'dir':
        args.push('--dir', op.path);
        break;
    }
  }
  return args;
}
