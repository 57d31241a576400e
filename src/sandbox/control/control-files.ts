/**
 * What a sandbox that outlives its starter needs on the host: the control directory, where the
 * init binds its control socket and leaves exit.json, and the log file its output goes to.
 *
 * The control directory is `<runtime>/control`: made fresh at each start (the runtime directory
 * itself is), mode 0700, owned by the sandbox's uid (the init runs as that uid and binds the
 * socket there; nothing else of the sandbox's ever sees it: it is never mounted inside, and the
 * init reaches it through an O_PATH fd the agent does not inherit). Whoever can connect to the
 * socket controls the sandbox: root, and that uid on the host.
 *
 * The log file is the caller's path, opened (created 0600) for appending without following a
 * symlink a sandbox planted (host-path.ts), and refused inside a tree a sandbox can write: there,
 * an agent could read or erase its own log, or swap it for a symlink to a host file that the
 * init, as the sandbox's uid, would then append to on every line.
 */
import { chownSync, closeSync, constants, fstatSync, mkdirSync, openSync } from 'node:fs';
import { resolve } from 'node:path';
import { HostPathError, openHostPath, realPathOf, type SandboxTrees } from '../host-paths/host-path.js';
import type { SandboxIdentity } from '../identity/identity.js';
import { SandboxStartError } from '../launch/launch.js';
import { at, O_PATH } from '../host-paths/untrusted-tree.js';

export type LogFileErrorCode = 'log-file-in-sandbox-tree' | 'log-file-not-regular' | 'log-file-path';

export class LogFileError extends SandboxStartError {
  override name = 'LogFileError';
  constructor(
    readonly code: LogFileErrorCode,
    message: string,
  ) {
    super(message, 2);
  }
}

/** Makes `dir` (0700, the sandbox's) and returns an O_PATH fd of it for the init. */
export function makeControlDir(dir: string, identity: SandboxIdentity): number {
  mkdirSync(dir, { mode: 0o700 });
  const fd = openSync(dir, O_PATH | constants.O_DIRECTORY | constants.O_NOFOLLOW);
  try {
    // Through the fd of what was just made (root's own run directory, but no path twice).
    if (!identity.rootless) chownSync(at(fd), identity.uid, identity.gid);
    return fd;
  } catch (err) {
    closeSync(fd);
    throw err;
  }
}

/** The log file at `path`, open O_WRONLY|O_APPEND (created 0600 when missing). */
export function openLogFile(path: string, trees: SandboxTrees): number {
  const refuse = (real: string, tree: string): never => {
    throw new LogFileError(
      'log-file-in-sandbox-tree',
      `log file ${path}: ${real} is inside ${tree}, which a sandbox can write; keep logs outside every workspace and writable --mount`,
    );
  };
  let opened;
  try {
    // Judged before anything is created: a refused log file must not be left behind.
    const real = realPathOf(resolve(path), trees);
    const tree = trees.treeOf(real);
    if (tree !== null) refuse(real, tree);
    opened = openHostPath(resolve(path), {
      trees,
      expect: 'any',
      create: { owner: null },
      fileFlags: constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NONBLOCK,
      fileMode: 0o600,
    });
  } catch (err) {
    if (err instanceof HostPathError)
      throw new LogFileError('log-file-path', `log file ${path}: ${err.message}`);
    throw err;
  }
  if (opened.tree !== null) {
    closeSync(opened.fd);
    refuse(opened.real, opened.tree);
  }
  if (!fstatSync(opened.fd).isFile()) {
    closeSync(opened.fd);
    throw new LogFileError('log-file-not-regular', `log file ${path}: ${opened.real} is not a regular file`);
  }
  return opened.fd;
}
