/**
 * The host paths of a gateway sandbox that its owner named or will get back: `--workspace` and
 * `--mount`, checked **as the owner** at every start (caller-paths.ts; the sandbox binds them only
 * if they are still the inodes the check saw), and a workspace kept past its sandbox, handed back
 * to the owner (the sandbox's uid owned it).
 */
import { constants, closeSync, fchownSync, fstatSync, openSync } from 'node:fs';
import { join } from 'node:path';
import type { IdentityRegistry } from '../../sandbox/identity/identity.js';
import type { StateDirs } from '../../sandbox/state-dirs.js';
import { handOverTree } from '../../sandbox/host-paths/untrusted-tree.js';
import { checkAsCaller, type PathRequest } from './caller-paths.js';
import { primaryGid } from '../host-groups.js';
import type { SandboxRecord } from '../store/sandbox-store.js';

/** What the checks need of the gateway. */
export interface PathHost {
  /** A rootless gateway: every sandbox is the gateway's user, no path checks. */
  rootless: boolean;
  identities: IdentityRegistry | null;
  dirs: StateDirs;
}

/** The workspace and mounts of a record, checked as its owner where the owner named them. */
export async function checkedPaths(rec: SandboxRecord, host: PathHost) {
  const requests: PathRequest[] = [];
  if (!rec.spec.ownWorkspace) {
    // After its first start the workspace is the sandbox's uid's (0700): that passes too.
    const handedTo = host.rootless
      ? undefined
      : (host.identities?.lookup({ state: host.dirs.state, name: rec.id }) ?? undefined);
    requests.push({ path: rec.spec.workspace, write: true, create: true, what: '--workspace', handedTo });
  }
  for (const m of rec.spec.mounts)
    requests.push({ path: m.host, write: !m.readOnly, what: `--mount ${m.path}` });
  if (host.rootless || rec.ownerUid === 0 || requests.length === 0) {
    return { workspace: rec.spec.workspace, mounts: rec.spec.mounts, expected: undefined };
  }
  const gid = (await primaryGid(rec.ownerUid)) ?? rec.ownerUid;
  const checked = await checkAsCaller(rec.ownerUid, gid, requests);
  const expected = new Map<string, { dev: number; ino: number }>();
  let i = 0;
  let workspace = rec.spec.workspace;
  if (!rec.spec.ownWorkspace) {
    workspace = checked[i]!.real;
    expected.set(workspace, checked[i++]!);
  }
  const mounts = rec.spec.mounts.map((m) => {
    const c = checked[i++]!;
    expected.set(c.real, c);
    return { ...m, host: c.real };
  });
  return { workspace, mounts, expected };
}

/**
 * A workspace kept past its sandbox, handed back to the sandbox's owner (the sandbox's uid owned
 * it). Returns its path.
 *
 * Threat: the path of a workspace the owner gave is theirs to name, and a path they may not use
 * (root's `/etc`, another user's home) is refused at the start, but the record stays until the
 * create is undone or the sandbox deleted. Handing such a path "back" would give the user root's
 * tree. So a workspace the owner gave is handed back only when the directory opened is the
 * sandbox's uid's (`sandboxUid`): one the sandbox's first start took over from the owner. Anything
 * else is left as it is. The gateway's own workspace (in the sandbox's storage) is always handed.
 */
export async function handBackWorkspace(
  rec: SandboxRecord,
  ownWorkspace: boolean,
  rootless: boolean,
  sandboxUid: number | null,
): Promise<string> {
  if (rootless) return rec.spec.workspace;
  const gid = (await primaryGid(rec.ownerUid)) ?? rec.ownerUid;
  let fd: number;
  try {
    fd = openSync(rec.spec.workspace, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
  } catch {
    return rec.spec.workspace; // gone, or replaced by a symlink: nothing to hand back
  }
  try {
    // fstat of the fd handed over: the very directory checked, whatever the path points at now.
    if (!rec.spec.ownWorkspace && (sandboxUid === null || fstatSync(fd).uid !== sandboxUid)) {
      return rec.spec.workspace;
    }
    // Only what the sandbox's uid owns: anything else in the tree was never the owner's to get.
    handOverTree(fd, { uid: rec.ownerUid, gid }, sandboxUid ?? undefined);
  } finally {
    closeSync(fd);
  }
  if (ownWorkspace) {
    // The gateway's own workspace lies in the sandbox's storage directory: that too is the owner's now.
    const storage = openSync(
      join(rec.spec.workspace, '..'),
      constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW,
    );
    try {
      fchownSync(storage, rec.ownerUid, gid);
    } finally {
      closeSync(storage);
    }
  }
  return rec.spec.workspace;
}
