/**
 * Host-side work on the directory trees a sandbox can write: its workspace, its storage, the host
 * directories mapped in writable, and the workspaces of every other sandbox.
 *
 * Threat: Carapace prepares these trees as root before each start (it hands the workspace to the
 * sandbox's uid, creates the read-write sub-paths the policy lists, opens what bwrap binds), and
 * everything below their roots may have been made by a sandbox: a workspace persists between
 * runs, and another sandbox may be running on it at that very moment. A symlink planted there, or
 * a directory swapped for a symlink while we walk, must never make root chown, create, open or
 * expose anything outside the tree. The same holds for any host path that merely passes through
 * such a tree: a workspace nested in another sandbox's workspace, a --mount source, a policy file.
 *
 * Node has no openat(2), so each directory is opened once, without following a symlink, and its
 * entries are reached through `/proc/self/fd/<fd>/<name>`: the kernel jumps straight to the open
 * directory (the magic link is not re-resolved by path) and follows exactly one component, which
 * is never followed when it is a symlink. A file is chowned through an O_PATH|O_NOFOLLOW fd of it,
 * after fstat on that same fd: a rename between the check and the chown cannot slip another inode
 * in. A file with several hard links is left alone: it may be a host file linked into the tree;
 * so is a device node.
 *
 * Trusted: the root of each tree (the user named it, or Carapace made it), and everything outside
 * the trees (the system's and the user's own symlinks are followed there). host-path.ts draws that
 * line for any host path, with the same fds: ordinary resolution above a tree's root, no symlink
 * and no '..' below it.
 */
import {
  chownSync,
  closeSync,
  constants,
  fchownSync,
  fstatSync,
  openSync,
  readdirSync,
  type Dirent,
} from 'node:fs';

/** Not in Node's fs.constants: an fd that names a file without opening it for I/O. */
export const O_PATH = 0o10000000;
const O_DIR_NOFOLLOW = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW;

export interface TreeOwner {
  uid: number;
  gid: number;
}

/** The path through which the kernel reaches `name` inside the directory open as `fd`. */
export function at(fd: number, name?: string): string {
  return name === undefined ? `/proc/self/fd/${fd}` : `/proc/self/fd/${fd}/${name}`;
}

export function errnoOf(err: unknown): string | undefined {
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

/**
 * Chowns one non-directory entry of `dirFd`, when it has a single link (or is a symlink) and
 * belongs to `from` (when given).
 */
function chownEntry(dirFd: number, name: string, owner: TreeOwner, from: number | undefined): void {
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
    if (from !== undefined && st.uid !== from) return;
    // Through the magic link of the O_PATH fd: this inode, even when it is a symlink (a symlink
    // reached this way is not followed again).
    chownSync(at(fd), owner.uid, owner.gid);
  } finally {
    closeSync(fd);
  }
}

/**
 * Hands the tree open as `rootFd` to `owner`: every directory, symlink and singly-linked file, of
 * `from` only when it is given (what the tree's owner owns: a file of another user or of root that
 * was moved into it stays theirs, never handed to a sandbox nor from one to its owner).
 * Iterative, so a deep tree cannot exhaust the stack; it holds one fd per level.
 */
export function handOverTree(rootFd: number, owner: TreeOwner, from?: number): void {
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
        chownEntry(top.fd, entry.name, owner, from);
        continue;
      }
      const sub = openSubdir(top.fd, entry.name);
      if (sub === null) continue;
      try {
        if (from === undefined || fstatSync(sub).uid === from) fchownSync(sub, owner.uid, owner.gid);
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
