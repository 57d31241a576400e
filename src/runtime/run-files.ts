/**
 * The host files a run reads and appends to - its policy and its audit trail - opened so that no
 * sandbox can choose them.
 *
 * Threat: a policy file inside a tree a sandbox writes (its own workspace, another sandbox's, a
 * writable --mount) is a policy the agent can edit: `carapace run` watches it and applies network
 * changes live. An audit file there is one the agent can read, truncate or replace with a symlink
 * to a host file that root then appends to. So both are refused when they lie in such a tree, and
 * are opened without following a symlink planted in one on the way (openHostPath).
 */
import { closeSync, constants, fstatSync, readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import {
  HostPathError,
  openHostPath,
  realPathOf,
  type SandboxTrees,
} from '../sandbox/host-paths/host-path.js';
import { WritableTreeRegistry } from '../sandbox/host-paths/writable-trees.js';
import type { StateDirs } from '../sandbox/state-dirs.js';
import type { HostMount } from '../sandbox/spec.js';
import { RunInputError } from './sandbox-spec-from-policy.js';

/**
 * Every tree a sandbox of this state directory can write, plus the ones this run is about to give
 * its sandbox (its workspace and writable --mount sources, by the real path they will have).
 */
export function runTrees(dirs: StateDirs, workspace: string, mounts: HostMount[]): SandboxTrees {
  const registry = new WritableTreeRegistry(dirs);
  const known = registry.trees();
  const ours = [workspace, ...mounts.flatMap((m) => (m.readOnly ? [] : [m.host]))];
  return registry.trees(ours.map((p) => realOrAsGiven(p, known)));
}

/**
 * Where `path` leads; as given when the way there is refused (a symlink a sandbox planted): the
 * start refuses it then, with its audit event, and nothing of it is used before.
 */
function realOrAsGiven(path: string, trees: SandboxTrees): string {
  try {
    return realPathOf(path, trees);
  } catch (err) {
    if (err instanceof HostPathError) return path;
    throw err;
  }
}

/** A policy or audit file inside a tree a sandbox can write. */
export class SandboxWritableFileError extends RunInputError {
  override name = 'SandboxWritableFileError';
  override readonly code = 'SANDBOX_WRITABLE_FILE';
  constructor(
    message: string,
    readonly path: string,
    readonly tree: string,
  ) {
    super(message);
  }
}

function refuseInTree(option: string, path: string, real: string, tree: string): never {
  throw new SandboxWritableFileError(
    `${option} ${path}: ${real} is inside ${tree}, which a sandbox can write; ` +
      `keep policy and audit files outside every workspace and writable --mount`,
    real,
    tree,
  );
}

/** The text of the policy file at `path`, or null when it cannot be read (the engine says why). */
export function readPolicyText(path: string, trees: SandboxTrees): string | null {
  let opened;
  try {
    // O_NONBLOCK: a FIFO named as the policy must not hang the run (it is then refused: not a file).
    opened = openHostPath(resolve(path), {
      trees,
      expect: 'any',
      fileFlags: constants.O_RDONLY | constants.O_NONBLOCK,
    });
  } catch (err) {
    if (err instanceof HostPathError && (err.code === 'not-found' || err.code === 'not-directory')) {
      return null;
    }
    if (err instanceof HostPathError && (err.code === 'symlink' || err.code === 'parent-link')) {
      throw new SandboxWritableFileError(`--policy ${path}: ${err.message}`, err.path, dirname(err.path));
    }
    if (err instanceof HostPathError) throw new RunInputError(`--policy ${path}: ${err.message}`);
    throw err;
  }
  try {
    if (opened.tree !== null) refuseInTree('--policy', path, opened.real, opened.tree);
    if (!fstatSync(opened.fd).isFile()) return null;
    return readFileSync(opened.fd, 'utf8');
  } finally {
    closeSync(opened.fd);
  }
}

/** Kernel filesystems whose files take no appended lines (a write fails, or means something else). */
const NOT_A_DISK = ['/proc', '/sys'];

/**
 * The audit file at `path`, open for appending (created 0600 if missing, in a directory that must
 * exist: a typo'd path is said, not made).
 */
export function openAuditFile(path: string, trees: SandboxTrees): number {
  let opened;
  try {
    // Judged before anything is created: a refused audit file must not be left behind.
    const real = realPathOf(resolve(path), trees);
    const tree = trees.treeOf(real);
    if (tree !== null) refuseInTree('--audit', path, real, tree);
    const kernel = NOT_A_DISK.find((d) => real === d || real.startsWith(`${d}/`));
    if (kernel !== undefined)
      throw new RunInputError(
        `--audit ${path}: ${real} is in ${kernel}, which takes no audit lines: name a file on a disk`,
      );
    opened = openHostPath(resolve(path), {
      trees,
      expect: 'any',
      fileFlags: constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NONBLOCK,
      fileMode: 0o600,
    });
  } catch (err) {
    if (err instanceof HostPathError)
      throw new RunInputError(
        `--audit ${path}: ${err.message}${err.code === 'not-found' ? ' (make the directory first)' : ''}`,
      );
    throw err;
  }
  if (opened.tree !== null) {
    closeSync(opened.fd);
    refuseInTree('--audit', path, opened.real, opened.tree);
  }
  if (!fstatSync(opened.fd).isFile()) {
    closeSync(opened.fd);
    throw new RunInputError(`--audit ${path}: ${opened.real} is not a regular file`);
  }
  return opened.fd;
}
