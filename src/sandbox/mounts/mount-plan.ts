/**
 * The sandbox's view of the filesystem: what the policy does not list does not exist inside.
 *
 * Security assumptions:
 * - read_only paths are the host's paths, bound read-only at the same place; a host path that is a
 *   symlink (`/lib → usr/lib` on merged-/usr systems) is recreated as the same symlink, so its
 *   target must be listed too to be reachable.
 * - The host's root-level symlinks whose target is visible inside (`/bin → usr/bin` when /usr is
 *   listed) are recreated too, so that programs find their ELF interpreter and policies written
 *   for containers (where those symlinks simply exist) run unchanged. A symlink grants nothing:
 *   the mount allowlist and Landlock both judge the path it resolves to. On a host that has not
 *   merged /usr, the directories merged-/usr folds into it (/bin, /sbin, /lib, /lib64, …) are the
 *   other half of the same system tree: a policy that lists /usr gets them, read-only, so that it
 *   runs the same on both layouts (docs/sandbox.md, "The filesystem").
 * - read_write paths are never the host's path of that name: /sandbox is the workspace, /tmp a
 *   private tmpfs, /dev a minimal devtmpfs made by bwrap, anything else a directory of the sandbox's
 *   own storage. Only an explicit --mount maps a host directory writable.
 * - Everything bound from a tree a sandbox can write (the workspace, the storage, --mount sources)
 *   is a `tree-bind` or `mount-bind` here: the host opens it without following a symlink the
 *   sandbox may have planted and hands bwrap the descriptor, never the path (sandbox.ts).
 * - /proc is always a fresh procfs of the sandbox's pid namespace; it shows only sandbox processes.
 * - Memory-backed filesystems are bounded, or an agent could fill the host's memory through them
 *   whatever its cgroup (tmpfs pages outlive the process that wrote them): /tmp gets a size
 *   (tmpSizeBytes), /dev/shm its own 64 MiB tmpfs, and bwrap's /dev and root tmpfs are remounted
 *   read-only once everything is in place - without Landlock (an old kernel, best_effort) they
 *   would otherwise be writable and unbounded.
 * - Secrets in /etc are masked by an unreadable empty file (a directory of them by an empty
 *   read-only tmpfs) even though the user namespace already hides their owner; /etc/passwd and
 *   /etc/group are synthesized with the `sandbox` user. Those masks sit on the host's names: a
 *   host that renames a new file over one detaches the mask in every other namespace, so each one
 *   laid over a host tree is `guarded` (a file's source is also under /.carapace, read-only, where
 *   carapace-mask finds it to bind it again; a directory's is a fresh tmpfs: mask-guard.ts).
 * - /.carapace is Carapace's own directory of the sandbox (OwnDir): the init, the trust files and
 *   the masks' sources, one read-only bind of a directory the host made and the sandbox cannot
 *   write.
 * - A read-only path nested in a read-write one (e.g. /sandbox/.openclaw in /sandbox) is enforced by
 *   the read-only bind mount: Landlock rules only add rights, so Landlock alone cannot subtract it.
 *   One that does not exist yet is made (empty, not the sandbox's) or the start refused: it must
 *   never be left for the agent to create writable.
 * - Landlock lets the agent list directories from / down (read_dir, nothing else): every directory
 *   that holds host content is listed by the policy already, so what this adds is the names of the
 *   mount points bwrap made, and `ls /` works.
 */
import { lstatSync, readdirSync, readlinkSync } from 'node:fs';
import { join, posix, relative } from 'node:path';
import type { HostMount } from '../spec.js';
import { WORKSPACE_PATH } from '../spec.js';

/** What to do when a bind's source inside a sandbox-writable tree does not exist. */
export type MissingSource =
  /** Make the directory, owned by the sandbox (a read_write path). */
  | 'create'
  /** Make an empty directory the sandbox does not own (a read_only path under a writable tree). */
  | 'placeholder'
  /** Leave the path out (a read_only path the sandbox cannot create anyway). */
  | 'skip';

export type MountOp =
  /**
   * A host path: the system's (listed read_only, `listed`) or Carapace's own runtime files. A
   * listed one that lies in a tree a sandbox writes is opened by fd like a mount (bind-sources.ts).
   */
  | { kind: 'ro-bind' | 'bind'; host: string; path: string; listed?: boolean }
  /** A directory in the workspace or the sandbox's storage, opened by fd before the launch. */
  | {
      kind: 'tree-bind';
      tree: 'workspace' | 'storage';
      readOnly: boolean;
      host: string;
      path: string;
      missing: MissingSource;
    }
  /** A --mount source, opened by fd before the launch. */
  | { kind: 'mount-bind'; readOnly: boolean; host: string; path: string }
  /** A tree-bind or mount-bind once opened: bwrap binds this fd (or the alias of it, see launch). */
  | { kind: 'fd-bind'; readOnly: boolean; fd: number; real: string; path: string }
  | { kind: 'symlink'; target: string; path: string }
  | { kind: 'tmpfs'; path: string; readOnly: boolean; sizeBytes?: number }
  | { kind: 'proc' | 'dev'; path: string }
  | { kind: 'dir'; path: string };

/**
 * The source of a guarded mask over a directory: not a path but a fresh empty read-only tmpfs,
 * which carapace-mask mounts itself (bwrap lays the first one: a `tmpfs` op, read-only).
 */
export const EMPTY_DIR_MASK = 'empty-dir';

/** A mask the host keeps in place (mask-guard.ts): in-sandbox paths. */
export interface GuardedMask {
  /** Under /.carapace: the same inode the mask was bound from; or EMPTY_DIR_MASK. */
  source: string;
  /** The masked name, in a tree bound from the host. */
  target: string;
}

export interface MountPlan {
  ops: MountOp[];
  /** The masks over names of host trees, which a host rename would detach. */
  guarded: GuardedMask[];
  /** The unreadable empty file, in-sandbox: a guarded directory the host makes a file gets it. */
  fileMask: string;
  /** The Landlock allowlist, repeating the mount allowlist as a second layer. */
  landlockReadOnly: string[];
  landlockReadWrite: string[];
  /** Directories the agent may list (read_dir only, beneath them too). */
  landlockListDirs: string[];
  /** Listed paths that do not exist on the host and were left out. */
  missing: string[];
}

export interface MountPlanInput {
  readOnly: string[];
  readWrite: string[];
  workspace: string;
  /** Host directory backing read-write paths other than /sandbox, /tmp and /dev. */
  storage: string;
  mounts: HostMount[];
  /** Synthesized files: in-sandbox path → host file in `own.dir` (passwd, group, hosts, …). */
  files: Map<string, string>;
  /** Carapace's own directory of the sandbox, bound at /.carapace. */
  own: OwnDir;
  /** Size of the /tmp tmpfs (see tmpSizeBytes). */
  tmpBytes: number;
  /**
   * The host directory the sandbox's root mirrors: `/`. Tests of other host layouts (a root whose
   * /bin and /lib64 are real directories) point it at a small root of their own.
   */
  hostRoot?: string | undefined;
}

/** Where Carapace's own directory of a sandbox is, inside. */
export const OWN_DIR_PATH = '/.carapace';

/** Carapace's own directory of a sandbox (sandbox.ts makes it): host paths. */
export interface OwnDir {
  dir: string;
  /** The unreadable empty file laid over secrets. */
  mask: string;
  /**
   * What the agent reads in it, in-sandbox paths (the trust files). Not the init, the masks nor the
   * synthesized files' sources: those are bound, and read at the names they are bound on.
   */
  readable: string[];
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

/**
 * The root-level names merged-/usr turns into symlinks to `usr/<name>` (the usrmerge set, the same
 * on every distribution that merged). Only consulted where they are real directories.
 */
export const USR_MERGED_DIRS = ['bin', 'sbin', 'lib', 'lib32', 'lib64', 'libx32'];

/** Root-level names Carapace itself uses inside: never taken by a host symlink. */
const RESERVED_ROOT_NAMES = new Set(['.carapace', WORKSPACE_PATH.slice(1), 'proc', 'dev', 'tmp']);

const depth = (p: string) => (p === '/' ? 0 : p.split('/').length - 1);
export const within = (p: string, root: string) =>
  p === root || p.startsWith(root === '/' ? '/' : root + '/');

export function planMounts(input: MountPlanInput): MountPlan {
  const hostRoot = input.hostRoot ?? '/';
  const onHost = (p: string) => join(hostRoot, p);
  const { own } = input;
  const inside = (host: string) => posix.join(OWN_DIR_PATH, relative(own.dir, host));
  const plan: MountPlan = {
    ops: [],
    guarded: [],
    fileMask: inside(own.mask),
    landlockReadOnly: [],
    landlockReadWrite: [],
    landlockListDirs: ['/'],
    missing: [],
  };
  const rw = new Set(input.readWrite);
  const all = [...new Set([...input.readOnly, ...input.readWrite])].sort(
    (a, b) => depth(a) - depth(b) || (a < b ? -1 : a > b ? 1 : 0),
  );
  const workspaceWritable = rw.has(WORKSPACE_PATH);

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
      const missing: MissingSource =
        path === WORKSPACE_PATH || writable ? 'create' : workspaceWritable ? 'placeholder' : 'skip';
      plan.ops.push({ kind: 'tree-bind', tree: 'workspace', readOnly: !writable, host, path, missing });
      (writable ? plan.landlockReadWrite : plan.landlockReadOnly).push(path);
    } else if (writable) {
      const host = join(input.storage, 'rw', path);
      plan.ops.push({ kind: 'tree-bind', tree: 'storage', readOnly: false, host, path, missing: 'create' });
      plan.landlockReadWrite.push(path);
    } else {
      const op = hostPathOp(onHost(path), path);
      if (!op) {
        plan.missing.push(path);
        continue;
      }
      plan.ops.push(op);
      plan.landlockReadOnly.push(path);
    }
  }

  for (const m of input.mounts) {
    plan.ops.push({ kind: 'mount-bind', readOnly: m.readOnly, host: m.host, path: m.path });
    (m.readOnly ? plan.landlockReadOnly : plan.landlockReadWrite).push(m.path);
  }

  mirrorRootLevel(plan, hostRoot, input.readOnly);

  plan.ops.push({ kind: 'ro-bind', host: own.dir, path: OWN_DIR_PATH });
  plan.landlockReadOnly.push(...own.readable);
  // A listed host file that a synthesized one covers (a policy's /etc/passwd without /etc) is
  // never read, and the synthesized bind on it would sit on the host's own name: a host rename
  // there detaches it for good (the name it was on is a deleted file, nothing binds there again).
  // Without the host's bind, it sits on a mount point bwrap made, which no host rename touches.
  plan.ops = plan.ops.filter((o) => !(o.kind === 'ro-bind' && o.listed === true && input.files.has(o.path)));
  // A mask over a name of a tree bound from the host: kept in place while the sandbox runs.
  const hostTrees = plan.ops.filter((o) => o.kind === 'ro-bind' && o.listed === true).map((o) => o.path);
  const guard = (target: string, source: string) => {
    if (hostTrees.some((t) => within(target, t))) plan.guarded.push({ source, target });
  };
  const etcBound = plan.ops.some((o) => o.path === '/etc');
  if (etcBound) {
    for (const p of MASKED_ETC) {
      if (lstatOrNull(onHost(p))) plan.ops.push({ kind: 'ro-bind', host: own.mask, path: p });
      // Guarded even when absent now: a secret the host makes later is masked once it appears.
      guard(p, inside(own.mask));
    }
    for (const p of MASKED_ETC_DIRS) {
      if (lstatOrNull(onHost(p))) plan.ops.push({ kind: 'tmpfs', path: p, readOnly: true });
      guard(p, EMPTY_DIR_MASK);
    }
    for (const key of readdirSshKeys(onHost('/etc/ssh'))) {
      plan.ops.push({ kind: 'ro-bind', host: own.mask, path: `/etc/ssh/${key}` });
      guard(`/etc/ssh/${key}`, inside(own.mask));
    }
  }
  for (const [path, host] of input.files) {
    plan.ops.push({ kind: 'ro-bind', host, path });
    guard(path, inside(host));
    if (!plan.landlockReadOnly.some((r) => within(path, r))) plan.landlockReadOnly.push(path);
  }
  return plan;
}

/**
 * The host's root level, mirrored where it leads to something visible: its symlinks whose target
 * overlaps a visible tree (merged /usr: `/bin → usr/bin` when /usr is listed), and, where /usr is
 * not merged, the real /bin, /sbin, /lib64, … beside a listed /usr.
 */
function mirrorRootLevel(plan: MountPlan, hostRoot: string, readOnly: string[]): void {
  const visible = plan.ops.filter((o) => o.kind !== 'symlink' && o.kind !== 'dir').map((o) => o.path);
  const taken = (path: string) => plan.ops.some((o) => within(o.path, path));
  const links = rootLevelSymlinks(hostRoot);

  // A target may itself start with a root-level symlink (/lib64 → /lib/x86_64-linux-gnu, /lib → usr/lib).
  const resolve = (target: string): string => {
    let p = posix.resolve('/', target);
    for (let hops = 0; hops < 8; hops++) {
      const first = p.split('/')[1] ?? '';
      const next = links.get(first);
      if (next === undefined) break;
      p = posix.resolve('/', next, p.split('/').slice(2).join('/'));
    }
    return p;
  };

  for (const [name, target] of [...links].sort(([a], [b]) => (a < b ? -1 : 1))) {
    const path = `/${name}`;
    if (RESERVED_ROOT_NAMES.has(name) || taken(path)) continue;
    const to = resolve(target);
    if (visible.some((v) => within(v, to) || within(to, v))) {
      plan.ops.push({ kind: 'symlink', target, path });
    }
  }

  const hostUsr = (p: string) => plan.ops.some((o) => o.kind === 'ro-bind' && o.path === p);
  for (const name of USR_MERGED_DIRS) {
    const path = `/${name}`;
    if (links.has(name) || taken(path)) continue;
    const usrSide = `/usr/${name}`;
    const coveredBy = readOnly.find((l) => within(usrSide, l) && hostUsr(l));
    if (coveredBy === undefined) continue;
    const host = join(hostRoot, name);
    if (!lstatOrNull(host)?.isDirectory()) continue;
    plan.ops.push({ kind: 'ro-bind', host, path });
    plan.landlockReadOnly.push(path);
  }
}

/** name → target of every symlink directly in the host's root. */
function rootLevelSymlinks(hostRoot: string): Map<string, string> {
  const links = new Map<string, string>();
  let entries;
  try {
    entries = readdirSync(hostRoot, { withFileTypes: true });
  } catch {
    return links;
  }
  for (const e of entries) {
    if (!e.isSymbolicLink()) continue;
    try {
      links.set(e.name, readlinkSync(join(hostRoot, e.name)));
    } catch {
      // removed since the listing: nothing to mirror
    }
  }
  return links;
}

function lstatOrNull(path: string) {
  try {
    // No exception for the common miss: a start checks a dozen paths that may not exist.
    return lstatSync(path, { throwIfNoEntry: false }) ?? null;
  } catch {
    return null; // ENOTDIR, EACCES: not there either, for us
  }
}

function hostPathOp(host: string, path: string): MountOp | null {
  const st = lstatOrNull(host);
  if (!st) return null;
  if (st.isSymbolicLink()) return { kind: 'symlink', target: readlinkSync(host), path };
  return { kind: 'ro-bind', host, path, listed: true };
}

function readdirSshKeys(dir: string): string[] {
  try {
    // Host private keys: reading them would let an agent impersonate this machine.
    return readdirSync(dir).filter((f) => /key/.test(f) && !f.endsWith('.pub'));
  } catch {
    return [];
  }
}
