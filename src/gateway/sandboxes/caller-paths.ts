/**
 * Host paths a caller of the system gateway names (`--workspace`, `--mount`), checked as that
 * caller.
 *
 * Threat: the system gateway runs as root. Without a check, a user could name `/root` or another
 * user's home as a workspace or mount and have root bind it into their sandbox. So before a start,
 * a short-lived process running as the caller's uid and gid (without supplementary groups: a path
 * reachable only through a group is refused, never wrongly allowed) resolves each path and checks
 * it may read it (and write it, for a workspace or a writable mount); the gateway then uses the
 * resolved path only if what it opens is the very inode the caller's process saw (device and
 * inode compared), so a path swapped between the check and the start is refused. A workspace must
 * also be the caller's own directory (or the sandbox's, after its first start): the start hands
 * it to the sandbox's uid with everything in it, and the delete hands it back to the caller.
 *
 * A rootless gateway runs as its user: the kernel already checks everything it opens.
 */
import { spawn } from 'node:child_process';
import { ApiError } from '../api/errors.js';

export interface PathRequest {
  path: string;
  write: boolean;
  /** Made (0700, the caller's) when missing: a new workspace. */
  create?: boolean;
  /** What the path is for, for the message (`--workspace`, `--mount /data`). */
  what: string;
  /**
   * A uid whose own path passes though the caller may not use it: the sandbox's, for a workspace
   * the caller gave, which its first start handed to the sandbox (0700). The caller still resolves
   * the path; only the sandbox's own inode passes, never one of another uid swapped in.
   */
  handedTo?: number | undefined;
}

export interface CheckedPath {
  /** The path as the caller's process resolved it (symlinks followed as that user). */
  real: string;
  dev: number;
  ino: number;
}

const CHECKER = `
const fs = require('node:fs');
const out = [];
for (const { path, write, create } of JSON.parse(process.argv[1])) {
  try {
    if (create && !fs.existsSync(path)) fs.mkdirSync(path, { recursive: true, mode: 0o700 });
    const real = fs.realpathSync(path);
    const st = fs.statSync(real);
    try {
      fs.accessSync(real, fs.constants.R_OK | fs.constants.X_OK | (write ? fs.constants.W_OK : 0));
      out.push({ real, dev: st.dev, ino: st.ino, owner: st.uid });
    } catch (e) {
      out.push({ error: e.code || String(e), real, dev: st.dev, ino: st.ino, owner: st.uid, dir: st.isDirectory() });
    }
  } catch (e) {
    out.push({ error: e.code || String(e) });
  }
}
process.stdout.write(JSON.stringify(out));`;

/** Resolves and checks `paths` as `uid`/`gid`; refuses with one line naming the first that fails. */
export async function checkAsCaller(uid: number, gid: number, paths: PathRequest[]): Promise<CheckedPath[]> {
  if (paths.length === 0) return [];
  const child = spawn(process.execPath, ['-e', CHECKER, JSON.stringify(paths)], {
    uid,
    gid,
    cwd: '/',
    env: { PATH: '/usr/bin:/bin' },
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  let text = '';
  child.stdout.on('data', (d: Buffer) => (text += String(d)));
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  let results: (
    | { real: string; dev: number; ino: number; owner: number }
    | { error: string; real?: string; dev?: number; ino?: number; owner?: number; dir?: boolean }
  )[];
  try {
    results = JSON.parse(text) as typeof results;
  } catch {
    throw new ApiError('INTERNAL', `the path check as uid ${uid} failed (exit ${code})`);
  }
  return results.map((r, i) => {
    const req = paths[i]!;
    if (
      'error' in r &&
      r.error === 'EACCES' &&
      req.handedTo !== undefined &&
      r.owner === req.handedTo &&
      r.dir
    ) {
      return { real: r.real!, dev: r.dev!, ino: r.ino! };
    }
    if ('error' in r) {
      const why =
        r.error === 'ENOENT'
          ? 'does not exist'
          : r.error === 'EACCES'
            ? `is not yours to ${req.write ? 'write' : 'read'}`
            : r.error;
      throw new ApiError('FORBIDDEN', `${req.what} ${req.path} ${why} (checked as uid ${uid})`);
    }
    // A workspace is handed to its sandbox whole (every file in it chowned to the sandbox's uid,
    // and back to the user at delete): one the user may write but does not own (/tmp, /dev/shm, a
    // group's shared directory) would give them everyone's files in it.
    if (req.create && r.owner !== uid && (req.handedTo === undefined || r.owner !== req.handedTo)) {
      throw new ApiError(
        'FORBIDDEN',
        `${req.what} ${req.path} is not yours: a workspace is handed to its sandbox whole, so give a directory you own (checked as uid ${uid})`,
      );
    }
    return { real: r.real, dev: r.dev, ino: r.ino };
  });
}
