/**
 * Opens what a sandbox binds from trees it can write (its workspace, its storage) and the --mount
 * sources, as the launching user, and hands bwrap descriptors instead of paths.
 *
 * Why descriptors: bwrap resolves a path again, as the sandbox's uid, after we checked it. Between
 * the two, a sandbox sharing the workspace could swap a checked directory for a symlink to any
 * host path. With `--bind-fd` bwrap binds what the fd names and refuses to start if the path it
 * resolved is another inode ("Race condition binding dirfd").
 *
 * Why aliases: bwrap (unprivileged, by design) still turns the fd back into a path with
 * realpath(3), as the sandbox's uid, so a directory under a parent that uid cannot search (a
 * workspace under /root) cannot be bound that way, whatever the fd. For those, carapace-launch
 * binds the fd itself at an alias in a mount namespace of its own (never the host's), under the
 * sandbox's runtime directory, before it becomes the sandbox's uid and runs bwrap; bwrap binds the
 * alias. No host directory's mode changes, and nothing but that one bwrap sees the alias.
 */
import {
  closeSync,
  constants,
  fchmodSync,
  fstatSync,
  mkdirSync,
  openSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { SandboxIdentity } from '../identity/identity.js';
import type { MountOp, MountPlan } from './mount-plan.js';
import {
  HostPathError,
  openHostPath,
  sandboxTrees,
  type OpenedHostPath,
  type SandboxTrees,
} from '../host-paths/host-path.js';
import { handOverTree, type TreeOwner } from '../host-paths/untrusted-tree.js';
import type { WritableTreeRegistry } from '../host-paths/writable-trees.js';
import { WORKSPACE_PATH } from '../spec.js';

type FdBind = Extract<MountOp, { kind: 'fd-bind' }>;

export interface OpenBindsInput {
  plan: MountPlan;
  name: string;
  identity: SandboxIdentity;
  workspace: string;
  landlock: 'best_effort' | 'hard_requirement';
  registry: WritableTreeRegistry;
  /** Where alias mount points are made (the sandbox's runtime directory). */
  runtime: string;
  /**
   * Host paths someone else checked (the gateway, as its caller): what is opened must be the very
   * inode they saw, or the start is refused before anything is handed over.
   */
  expected?: ReadonlyMap<string, { dev: number; ino: number }> | undefined;
  /**
   * Whose files in a workspace handed to the sandbox's uid go with it: the gateway's caller (a file
   * of another uid moved into their directory stays that uid's). Unset (a run by root on a path of
   * root's choosing): everything in it.
   */
  handOverFrom?: number | undefined;
}

export interface OpenedBinds {
  /** fd → alias path, for the sources the sandbox's uid cannot reach by path (see carapace-launch). */
  aliases: Map<number, string>;
  /** Every fd opened; the caller closes them once bwrap has its own copies. */
  fds: number[];
}

/** Replaces every tree-bind and mount-bind of `plan` by an fd-bind, opening each source. */
export function openBinds(input: OpenBindsInput): OpenedBinds {
  const { plan, identity } = input;
  const owner: TreeOwner | null = identity.rootless ? null : identity;
  const opened: OpenedBinds = { aliases: new Map(), fds: [] };
  try {
    const known = input.registry.roots();
    const workspace = openWorkspace(input, sandboxTrees(known), owner);
    opened.fds.push(workspace.fd);
    input.registry.record(workspace.real, workspace.fd, input.name, 'workspace');
    // From here on the workspace is a tree the sandbox writes, whatever it was before.
    const trees = sandboxTrees([...known, workspace.real]);

    const ops: MountOp[] = [];
    for (const op of plan.ops) {
      if (op.kind === 'ro-bind' && op.listed) {
        // A listed read_only path is resolved like any host path: a way through a tree a sandbox
        // writes either stops at that sandbox's symlink (refused) or ends inside the tree, and
        // is then bound by fd. System paths (the rest) are bound by path, as the system's.
        const source = openHostPath(op.host, { trees, expect: 'any' });
        if (source.tree === null) {
          closeSync(source.fd);
          ops.push(op);
          continue;
        }
        opened.fds.push(source.fd);
        ops.push({ kind: 'fd-bind', readOnly: true, fd: source.fd, real: source.real, path: op.path });
        continue;
      }
      if (op.kind !== 'tree-bind' && op.kind !== 'mount-bind') {
        ops.push(op);
        continue;
      }
      let source: OpenedHostPath | null;
      if (op.kind === 'tree-bind' && op.path === WORKSPACE_PATH)
        source = { ...workspace, fd: dupPath(workspace.fd) };
      else if (op.kind === 'tree-bind') source = openTreeSource(op, input, trees, owner, workspace);
      else {
        source = openMountSource(op, trees);
        if (source) expectInode(input, op.host, source);
      }
      if (source === null) {
        plan.missing.push(op.path);
        continue;
      }
      opened.fds.push(source.fd);
      if (op.kind === 'mount-bind' && !op.readOnly) {
        input.registry.record(source.real, source.fd, input.name, 'mount');
      }
      ops.push({ kind: 'fd-bind', readOnly: op.readOnly, fd: source.fd, real: source.real, path: op.path });
    }
    plan.ops = ops;
    if (!identity.rootless) makeAliases(plan, identity, input.runtime, opened);
    return opened;
  } catch (err) {
    for (const fd of opened.fds) closeSync(fd);
    throw err;
  }
}

/** Refuses a source that is not the inode a caller's check saw at `path` (a swap since then). */
function expectInode(input: OpenBindsInput, path: string, opened: OpenedHostPath): void {
  const want = input.expected?.get(path);
  if (!want) return;
  const st = fstatSync(opened.fd);
  if (st.dev !== want.dev || st.ino !== want.ino) {
    closeSync(opened.fd);
    throw new HostPathError(
      'changed',
      path,
      `${path} changed between the caller's check and the start (another directory is there now): try again`,
    );
  }
}

/** A second fd of the same directory (each fd-bind owns its own). */
function dupPath(fd: number): number {
  return openSync(`/proc/self/fd/${fd}`, O_PATH);
}

const O_PATH = 0o10000000;

/**
 * The workspace: made if missing, handed to the sandbox's uid when another owns it, 0700. Its path
 * is resolved like any host path: the user's own symlinks are followed, but inside another
 * sandbox's tree (a workspace nested in another workspace) nothing is.
 */
function openWorkspace(input: OpenBindsInput, trees: SandboxTrees, owner: TreeOwner | null): OpenedHostPath {
  let ws: OpenedHostPath;
  try {
    ws = openHostPath(input.workspace, { trees, create: { owner } });
  } catch (err) {
    if (err instanceof HostPathError && err.code === 'not-directory') {
      throw new HostPathError(
        err.code,
        err.path,
        `workspace ${input.workspace} is not a directory: give a directory (or a path to create)`,
        2,
      );
    }
    throw err;
  }
  expectInode(input, input.workspace, ws);
  if (owner === null) return ws;
  // One fd for the whole hand-over: what is checked, walked and chmod'ed is the same directory.
  const dir = openSync(`/proc/self/fd/${ws.fd}`, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    if (fstatSync(dir).uid !== owner.uid) handOverTree(dir, owner, input.handOverFrom);
    fchmodSync(dir, 0o700);
  } catch (err) {
    closeSync(ws.fd);
    throw err;
  } finally {
    closeSync(dir);
  }
  return ws;
}

/**
 * A path inside the workspace or the storage. read_write: made, owned by the sandbox. read_only
 * under a writable /sandbox and missing: made empty and not the sandbox's (best_effort), or the
 * start refused (hard_requirement) - never left for the agent to create writable.
 */
function openTreeSource(
  op: Extract<MountOp, { kind: 'tree-bind' }>,
  input: OpenBindsInput,
  trees: SandboxTrees,
  owner: TreeOwner | null,
  workspace: OpenedHostPath,
): OpenedHostPath | null {
  const from = op.tree === 'workspace' ? { fd: workspace.fd, real: workspace.real } : undefined;
  const path = op.tree === 'workspace' ? op.path.slice(WORKSPACE_PATH.length + 1) : op.host;
  const expect = op.readOnly ? 'any' : 'directory';
  if (op.missing === 'create') return openHostPath(path, { trees, from, expect, create: { owner } });
  try {
    return openHostPath(path, { trees, from, expect });
  } catch (err) {
    if (!(err instanceof HostPathError) || err.code !== 'not-found') throw err;
    if (op.missing === 'skip') return null;
  }
  if (input.landlock === 'hard_requirement') {
    throw new HostPathError(
      'not-found',
      op.host,
      `${op.path} is read_only but does not exist in the workspace (${op.host}); with landlock ` +
        `hard_requirement it is not made for you: create it with the content the agent must not ` +
        `change, or use best_effort`,
    );
  }
  // The parents are the sandbox's own (like any directory of its workspace); the path itself is
  // ours: empty, 0755, and bound read-only, so the agent can neither write it nor replace it.
  const parent = openHostPath(dirname(path), { trees, from, create: { owner } });
  try {
    try {
      mkdirSync(`/proc/self/fd/${parent.fd}/${basename(path)}`, { mode: 0o755 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    return openHostPath(basename(path), { trees, from: parent, expect });
  } finally {
    closeSync(parent.fd);
  }
}

function openMountSource(op: Extract<MountOp, { kind: 'mount-bind' }>, trees: SandboxTrees): OpenedHostPath {
  try {
    return openHostPath(op.host, { trees, expect: 'any' });
  } catch (err) {
    if (err instanceof HostPathError && err.code === 'not-found') {
      throw new HostPathError(
        err.code,
        err.path,
        `--mount ${op.host}:${op.path}: ${err.path} does not exist`,
        2,
      );
    }
    throw err;
  }
}

/**
 * Sources the sandbox's uid cannot reach by path get an alias (a directory or an empty file under
 * `<runtime>/binds/`, where carapace-launch will bind the fd). The rest are bound with --bind-fd.
 */
function makeAliases(plan: MountPlan, identity: SandboxIdentity, runtime: string, opened: OpenedBinds): void {
  const binds = plan.ops.filter((o): o is FdBind => o.kind === 'fd-bind');
  const dir = join(runtime, 'binds');
  const passable = new Map<string, boolean>(); // the sources share most of their ancestors
  for (const op of binds) {
    if (reachableBy(op.real, identity, passable)) continue;
    mkdirSync(dir, { recursive: true, mode: 0o711 });
    const alias = join(dir, String(opened.aliases.size));
    if (fstatSync(op.fd).isDirectory()) mkdirSync(alias, { mode: 0o700 });
    else writeFileSync(alias, '', { mode: 0o600 });
    opened.aliases.set(op.fd, alias);
  }
}

/** Whether `uid` can search every directory above `real` (what bwrap's realpath needs). */
function reachableBy(real: string, identity: SandboxIdentity, passable: Map<string, boolean>): boolean {
  for (let dir = dirname(real); ; dir = dirname(dir)) {
    let ok = passable.get(dir);
    if (ok === undefined) {
      const st = statSync(dir);
      const bits = st.uid === identity.uid ? 0o100 : st.gid === identity.gid ? 0o010 : 0o001;
      ok = (st.mode & bits) !== 0;
      passable.set(dir, ok);
    }
    if (!ok) return false;
    if (dir === '/') return true;
  }
}
