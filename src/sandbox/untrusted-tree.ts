/**
 * Host-side work on the directory trees a sandbox can write: its workspace and its storage.
 *
 * Threat: Carapace prepares these trees as root before each start (it hands the workspace to the
 * sandbox's uid, creates the read-write sub-paths the policy lists), and everything below their
 * roots may have been made by a sandbox: the workspace persists between runs, and another sandbox
 * may be running on it at that very moment. A symlink planted there, or a directory swapped for a
 * symlink while we walk, must never make root chown, create or expose anything outside the tree.
 *
 * Node has no openat(2), so each directory is opened once, without following a symlink, and its
 * entries are reached through `/proc/self/fd/<fd>/<name>`: the kernel jumps straight to the open
 * directory (the magic link is not re-resolved by path) and follows exactly one component, which
 * is never followed when it is a symlink. A file is chowned through an O_PATH|O_NOFOLLOW fd of it,
 * after fstat on that same fd: a rename between the check and the chown cannot slip another inode
 * in. A file with several hard links is left alone: it may be a host file linked into the tree;
 * so is a device node.
 *
 * The root of a tree is trusted: the user named it (--workspace) or Carapace made it.
 */
import {
  chownSync,
  closeSync,
  constants,
  fchownSync,
  fstatSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readlinkSync,
  type Dirent,
} from 'node:fs';
import { isAbsolute, join, relative, sep } from 'node:path';
import { SandboxStartError } from './launch.js';

/** Not in Node's fs.constants: an fd that names a file without opening it for I/O. */
const O_PATH = 0o10000000;
const O_DIR_NOFOLLOW = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW;

export interface TreeOwner {
  uid: number;
  gid: number;
}

/** The path through which the kernel reaches `name` inside the directory open as `fd`. */
function at(fd: number, name?: string): string {
  return name === undefined ? `/proc/self/fd/${fd}` : `/proc/self/fd/${fd}/${name}`;
}

function errnoOf(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException).code;
}

/** Opens `name` in the directory `dirFd` as a directory; null when it is gone or is no directory. */
function openSubdir(dirFd: number, name: string): number | null {
  try {
    return openSync(at(dirFd, name), O_DIR_NOFOLLOW);
  } catch (err) {
    const code = errnoOf(err);
    // ELOOP: a symlink (never followed); ENOTDIR: not a directory; ENOENT: gone. All changed by
    // the sandbox since the listing, inside its own tree: nothing to do for us.
    if (code === 'ELOOP' || code === 'ENOTDIR' || code === 'ENOENT') return null;
    throw err;
  }
}

/** Chowns one non-directory entry of `dirFd`, when it has a single link (or is a symlink). */
function chownEntry(dirFd: number, name: string, owner: TreeOwner): void {
  let fd: number;
  try {
    fd = openSync(at(dirFd, name), O_PATH | constants.O_NOFOLLOW);
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return;
    throw err;
  }
  try {
    const st = fstatSync(fd);
    if (st.isDirectory()) return; // swapped for a directory since the listing: leave it
    if (!st.isSymbolicLink() && st.nlink !== 1) return;
    // Only root can have made a device node here; given to the sandbox's uid, it would be that
    // uid's raw device on the host (inside, the workspace is mounted nodev anyway).
    if (st.isBlockDevice() || st.isCharacterDevice()) return;
    // Through the magic link of the O_PATH fd: this inode, even when it is a symlink (a symlink
    // reached this way is not followed again).
    chownSync(at(fd), owner.uid, owner.gid);
  } finally {
    closeSync(fd);
  }
}

/**
 * Hands the tree open as `rootFd` to `owner`: every directory, symlink and singly-linked file.
 * Iterative, so a deep tree cannot exhaust the stack; it holds one fd per level.
 */
export function handOverTree(rootFd: number, owner: TreeOwner): void {
  fchownSync(rootFd, owner.uid, owner.gid);
  const stack: { fd: number; entries: Dirent[]; next: number }[] = [];
  const push = (fd: number) =>
    stack.push({ fd, entries: readdirSync(at(fd), { withFileTypes: true }), next: 0 });
  push(rootFd);
  try {
    while (stack.length > 0) {
      const top = stack[stack.length - 1]!;
      const entry = top.entries[top.next++];
      if (entry === undefined) {
        stack.pop();
        if (top.fd !== rootFd) closeSync(top.fd);
        continue;
      }
      if (!entry.isDirectory()) {
        chownEntry(top.fd, entry.name, owner);
        continue;
      }
      const sub = openSubdir(top.fd, entry.name);
      if (sub === null) continue;
      try {
        fchownSync(sub, owner.uid, owner.gid);
        push(sub);
      } catch (err) {
        closeSync(sub);
        throw err;
      }
    }
  } finally {
    for (const { fd } of stack) if (fd !== rootFd) closeSync(fd);
  }
}

function refuse(host: string, why: string): never {
  throw new SandboxStartError(
    `${host} ${why}: something in the sandbox may have made it to reach a host path; ` +
      `remove it (rm ${host}) and start again`,
  );
}

function describeNonDirectory(dirFd: number, name: string, host: string): never {
  let st;
  try {
    st = lstatSync(at(dirFd, name));
  } catch {
    refuse(host, 'changed while the sandbox was being prepared');
  }
  if (st.isSymbolicLink()) {
    let target = '?';
    try {
      target = readlinkSync(at(dirFd, name));
    } catch {
      // keep '?'
    }
    refuse(host, `is a symlink (to ${target}) where a directory of the sandbox's own is expected`);
  }
  refuse(host, 'is not a directory');
}

/**
 * Checks that `path` (inside the tree `root`) is reached without any symlink, and returns an fd of
 * it. With `create`, missing directories are made (mode 0700) and given to `create` (null: keep
 * our own uid, rootless). `lastMayBeFile`: the last component may be a file (a read-only path).
 * Returns null when the path does not exist and nothing is to be created.
 */
export function openBeneath(
  root: string,
  path: string,
  opts: { create?: TreeOwner | null; lastMayBeFile?: boolean } = {},
): number | null {
  const rel = relative(root, path);
  if (isAbsolute(rel) || rel.split(sep).includes('..')) {
    throw new SandboxStartError(`${path} is not inside ${root}`);
  }
  const parts = rel === '' ? [] : rel.split(sep);
  let fd = openSync(root, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    for (let i = 0; i < parts.length; i++) {
      const name = parts[i]!;
      const host = join(root, ...parts.slice(0, i + 1));
      const last = i === parts.length - 1;
      let next = openSubdir(fd, name);
      if (next === null && opts.create !== undefined) {
        let made = false;
        try {
          mkdirSync(at(fd, name), { mode: 0o700 });
          made = true;
        } catch (err) {
          if (errnoOf(err) !== 'EEXIST') throw err; // a symlink or a file: refused below
        }
        next = openSubdir(fd, name);
        if (next !== null && made && opts.create !== null) fchownSync(next, opts.create.uid, opts.create.gid);
      }
      if (next === null) {
        if (last && opts.lastMayBeFile) {
          try {
            next = openSync(at(fd, name), O_PATH | constants.O_NOFOLLOW);
          } catch (err) {
            if (errnoOf(err) === 'ENOENT') return null;
            throw err;
          }
          if (fstatSync(next).isSymbolicLink()) {
            closeSync(next);
            describeNonDirectory(fd, name, host);
          }
        } else {
          try {
            lstatSync(at(fd, name));
          } catch (err) {
            if (errnoOf(err) === 'ENOENT' && opts.create === undefined) return null;
            throw err;
          }
          describeNonDirectory(fd, name, host);
        }
      }
      closeSync(fd);
      fd = next;
    }
    const result = fd;
    fd = -1;
    return result;
  } finally {
    if (fd >= 0) closeSync(fd);
  }
}
