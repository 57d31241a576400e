/**
 * Resolving a host path the way the kernel would, except that nothing a sandbox may have made is
 * followed (see untrusted-tree.ts for the threat and the fd walk this shares): the workspace, the
 * --mount sources, the listed read_only paths, the policy and audit files.
 */
import { chownSync, closeSync, constants, lstatSync, mkdirSync, openSync, readlinkSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { printable } from '../../policy/printable.js';
import { SandboxStartError } from '../launch/launch.js';
import { at, errnoOf, O_PATH, type TreeOwner } from './untrusted-tree.js';

/** Sandbox-writable trees, by real path: every entry beneath one may have been made by a sandbox. */
export interface SandboxTrees {
  /** The tree `realPath` is, or lies beneath; null when no sandbox can write there. */
  treeOf(realPath: string): string | null;
}

const inside = (p: string, root: string) => p === root || p.startsWith(root === '/' ? '/' : root + '/');

export function sandboxTrees(roots: Iterable<string>): SandboxTrees {
  const list = [...new Set(roots)].sort((a, b) => b.length - a.length);
  return { treeOf: (p) => list.find((root) => inside(p, root)) ?? null };
}

export type HostPathErrorCode =
  /** A symlink where a sandbox can write: never followed. */
  | 'symlink'
  /** '..' where a sandbox can write: it could lead anywhere the sandbox moved things. */
  | 'parent-link'
  | 'not-directory'
  | 'not-found'
  /** The launching user cannot pass a directory on the way (no search right). */
  | 'unreachable'
  | 'too-many-links'
  /** Not the inode a caller's check saw there (bind-sources.ts, `expected`). */
  | 'changed';

export class HostPathError extends SandboxStartError {
  override name = 'HostPathError';
  constructor(
    readonly code: HostPathErrorCode,
    /** The path as far as it was resolved when the walk stopped. */
    readonly path: string,
    message: string,
    exitCode = 125,
    /** For 'not-found': the components after the missing one, not resolved. */
    readonly rest: string[] = [],
  ) {
    super(message, exitCode);
  }
}

export interface OpenedHostPath {
  /** O_PATH, unless `fileFlags` said how to open a file. Owned by the caller. */
  fd: number;
  /** Where the kernel reached, every symlink resolved. */
  real: string;
  /** The sandbox-writable tree it lies in, if any. */
  tree: string | null;
}

export interface OpenHostPathOptions {
  trees: SandboxTrees;
  /** What the last component may be: a directory (default), or a directory or a file. */
  expect?: 'directory' | 'any';
  /** Makes missing directories (0700); in a sandbox tree they are given to `owner` (null: ours). */
  create?: { owner: TreeOwner | null };
  /** Open a last component that is a file with these flags (O_NOFOLLOW is always added). */
  fileFlags?: number;
  /** With fileFlags including O_CREAT: a missing last component is created as a file, this mode. */
  fileMode?: number;
  /** Walk `path` (relative) from this open directory instead of from `/`. */
  from?: { fd: number; real: string };
}

/** Symlinks a path may pass through outside sandbox trees, as the kernel allows (MAXSYMLINKS). */
const MAX_LINKS = 40;
/** Times one walk looks again at an entry that changed under it (only a racing writer does that). */
const MAX_RACES = 8;
/** Components one walk may take: PATH_MAX's worth, its symlinks' and its creations' included. */
const MAX_STEPS = 8192;
const O_DIR_PATH = O_PATH | constants.O_DIRECTORY | constants.O_NOFOLLOW;

function components(path: string): string[] {
  return path.split('/').filter((c) => c !== '' && c !== '.');
}

function symlinkTarget(dirFd: number, name: string): string {
  try {
    return readlinkSync(at(dirFd, name));
  } catch {
    return '?';
  }
}

/**
 * Opens a host path the way the kernel would resolve it, except that nothing a sandbox may have
 * made is followed: outside sandbox-writable trees a symlink is the user's (or the system's) and
 * is followed, by reading it and walking its target component by component; inside one, a
 * symlink or '..' stops the walk with a HostPathError. Each directory is held by an fd and the next
 * component is reached through `/proc/self/fd/<fd>/<name>`, so a directory swapped for a symlink
 * after it was checked is never followed either. This is openat2(RESOLVE_NO_SYMLINKS) below the
 * trees' roots, and ordinary resolution above them, which Node cannot ask the kernel for.
 */
export function openHostPath(path: string, opts: OpenHostPathOptions): OpenedHostPath {
  if (!opts.from && !path.startsWith('/')) {
    throw new HostPathError('not-found', path, `${path} is not an absolute path`);
  }
  let queue = components(path);
  // The magic link of `from` is followed (to that very directory); O_NOFOLLOW would stop at it.
  let fd = openSync(opts.from ? at(opts.from.fd) : '/', O_PATH | constants.O_DIRECTORY);
  let real = opts.from?.real ?? '/';
  let links = 0;
  let races = 0;
  /** An entry changed between our look and our open: look again, but not for ever. */
  const again = (name: string, here: string) => {
    if (++races > MAX_RACES) {
      throw new HostPathError('symlink', here, `${here} keeps changing while it is opened; start again`);
    }
    queue.unshift(name);
  };
  let steps = 0;
  try {
    while (queue.length > 0) {
      if (++steps > MAX_STEPS)
        throw new HostPathError('too-many-links', path, `${path}: too long to resolve`);
      const name = queue.shift()!;
      const last = queue.length === 0;
      const tree = opts.trees.treeOf(real);
      const here = join(real, name);
      if (name === '..') {
        if (tree !== null) {
          throw new HostPathError(
            'parent-link',
            here,
            `${path}: ".." inside ${tree}, which a sandbox can change; name the directory without ".."`,
          );
        }
        const up = openSync(at(fd, '..'), O_DIR_PATH);
        closeSync(fd);
        fd = up;
        real = dirname(real);
        continue;
      }
      let st;
      try {
        // No exception for a missing entry: making a workspace meets one per start.
        st = lstatSync(at(fd, name), { throwIfNoEntry: false });
      } catch (err) {
        if (errnoOf(err) === 'EACCES') throw unreachable(path, real);
        throw err;
      }
      if (st === undefined) {
        if (last && opts.fileFlags !== undefined && (opts.fileFlags & constants.O_CREAT) !== 0) {
          const file = openSync(
            at(fd, name),
            opts.fileFlags | constants.O_EXCL | constants.O_NOFOLLOW,
            opts.fileMode ?? 0o600,
          );
          return { fd: file, real: here, tree };
        }
        if (!opts.create) {
          throw new HostPathError('not-found', here, `${here} does not exist`, 125, [...queue]);
        }
        // Look again: what is there now is judged like anything else. (A writer that keeps
        // removing what we make is the one thing that loops; the step bound below ends it.)
        if (!makeDirectory(fd, name, tree !== null ? opts.create.owner : null)) again(name, here);
        else queue.unshift(name);
        continue;
      }
      if (st.isSymbolicLink()) {
        const target = symlinkTarget(fd, name);
        if (tree !== null) {
          // The target is the sandbox's to choose (an escape sequence, a newline and a forged
          // line): shown escaped. The path named and the tree are the user's.
          throw new HostPathError(
            'symlink',
            here,
            `${here} is a symlink (to ${printable(target)}) inside ${tree}, which a sandbox can write: it may ` +
              `have been planted to reach a host path; remove it (rm ${here}) or name another path`,
          );
        }
        if (++links > MAX_LINKS)
          throw new HostPathError('too-many-links', here, `${path}: too many symlinks`);
        queue = [...components(target), ...queue];
        if (target.startsWith('/')) {
          closeSync(fd);
          fd = openSync('/', O_DIR_PATH);
          real = '/';
        }
        continue;
      }
      if (st.isDirectory()) {
        let next: number;
        try {
          next = openSync(at(fd, name), O_DIR_PATH);
        } catch (err) {
          // Made a symlink since the lstat: only something that writes here can have done that.
          if (errnoOf(err) === 'ELOOP' || errnoOf(err) === 'ENOTDIR') again(name, here);
          else if (errnoOf(err) === 'EACCES') throw unreachable(path, real);
          else throw err;
          continue;
        }
        closeSync(fd);
        fd = next;
        real = here;
        continue;
      }
      if (!last || (opts.expect ?? 'directory') === 'directory') {
        throw new HostPathError('not-directory', here, `${here} is not a directory`);
      }
      let file: number;
      try {
        file = openSync(at(fd, name), (opts.fileFlags ?? O_PATH) | constants.O_NOFOLLOW);
      } catch (err) {
        if (errnoOf(err) !== 'ELOOP') throw err;
        again(name, here); // made a symlink since the lstat: judged again above
        continue;
      }
      return { fd: file, real: here, tree };
    }
    const result = { fd, real, tree: opts.trees.treeOf(real) };
    fd = -1;
    return result;
  } finally {
    // The directory we stood in (not the result, which is the caller's).
    if (fd >= 0) closeSync(fd);
  }
}

/**
 * mkdir `name` in the directory `dirFd` (0700), given to `owner` through the fd of what was made.
 * False when something else made it first.
 */
function makeDirectory(dirFd: number, name: string, owner: TreeOwner | null): boolean {
  try {
    mkdirSync(at(dirFd, name), { mode: 0o700 });
  } catch (err) {
    if (errnoOf(err) === 'EEXIST') return false; // raced: the caller looks again
    throw err;
  }
  if (owner === null) return true;
  const made = openSync(at(dirFd, name), O_DIR_PATH);
  try {
    // Never by a path the sandbox could have redirected since the mkdir.
    chownSync(at(made), owner.uid, owner.gid);
  } finally {
    closeSync(made);
  }
  return true;
}

/**
 * The real path `path` would have, resolved like openHostPath as far as it exists, with the
 * missing rest appended: where a workspace that is yet to be made will be.
 */
export function realPathOf(path: string, trees: SandboxTrees): string {
  try {
    const opened = openHostPath(path, { trees, expect: 'any' });
    closeSync(opened.fd);
    return opened.real;
  } catch (err) {
    if (err instanceof HostPathError && err.code === 'not-found') return join(err.path, ...err.rest);
    if (err instanceof HostPathError && err.code === 'not-directory') return path;
    throw err;
  }
}

/** The launching user cannot search `dir` (rootless, or a root squashed by NFS). */
function unreachable(path: string, dir: string): HostPathError {
  const uid = process.getuid?.() ?? 0;
  return new HostPathError(
    'unreachable',
    dir,
    `uid ${uid} cannot reach ${path}: ${dir} is not searchable by it (chmod o+x ${dir}, or use a path elsewhere)`,
    2,
  );
}
