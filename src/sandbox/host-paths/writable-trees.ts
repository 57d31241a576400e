/**
 * Which host directory trees a sandbox can write, so that the host never trusts a path inside one.
 *
 * Threat: a sandbox writes its workspace (and any directory the user maps in writable) as it
 * likes, and what it writes persists after it exits. If the host later follows a symlink it left
 * there, uses a policy or audit file inside one, or makes another sandbox's workspace there, the
 * sandbox has chosen a host path for root: it could chown a host directory to itself, edit the
 * policy that binds it, read or erase its own audit trail, or have bwrap bind any host path.
 *
 * How the host knows every such tree, for one state directory:
 * - `<state>/sandboxes/` as a whole: each sandbox's storage (its read_write paths) and its default
 *   workspace live beneath it.
 * - `<state>/writable-trees/`: one record per workspace or writable --mount source a sandbox was
 *   given (its real path, the sandbox's name, and the directory's device and inode), written
 *   before the sandbox starts and kept after it exits, since what it wrote is still there. A
 *   record whose path no longer leads to that same directory (removed, or replaced by a new
 *   directory) is stale and dropped.
 * A sandbox of another state directory (another user's, another CARAPACE_HOME) is not known here.
 */
import {
  closeSync,
  existsSync,
  fstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  realpathSync,
  renameSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import type { StateDirs } from '../state-dirs.js';
import { sandboxTrees, type SandboxTrees } from './host-path.js';
import { contentKey } from '../keys.js';

interface TreeRecord {
  path: string;
  sandbox: string;
  kind: 'workspace' | 'mount';
  dev: number;
  ino: number;
}

const isRecord = (v: unknown): v is TreeRecord => {
  const r = v as Partial<TreeRecord> | null;
  return (
    typeof r === 'object' &&
    r !== null &&
    typeof r.path === 'string' &&
    r.path.startsWith('/') &&
    typeof r.sandbox === 'string' &&
    (r.kind === 'workspace' || r.kind === 'mount') &&
    typeof r.dev === 'number' &&
    typeof r.ino === 'number'
  );
};

export class WritableTreeRegistry {
  private readonly dir: string;
  private storage: string | undefined;

  constructor(private readonly dirs: StateDirs) {
    this.dir = join(dirs.state, 'writable-trees');
  }

  /**
   * `<state>/sandboxes`, by its real path (the state directory may be reached through a symlink);
   * as named while it does not exist yet (no sandbox has storage there then).
   */
  storageRoot(): string {
    if (this.storage === undefined) {
      const root = join(this.dirs.state, 'sandboxes');
      if (!existsSync(root)) return root;
      this.storage = realpathSync(root);
    }
    return this.storage;
  }

  /** Every known tree that still exists, by real path; stale records are removed on the way. */
  roots(): string[] {
    const roots = [this.storageRoot()];
    // Looked at, not caught missing: a start should not pay for an exception (nor make state).
    if (!existsSync(this.dir)) return roots;
    const names = readdirSync(this.dir).filter((n) => n.endsWith('.json'));
    for (const name of names) {
      const file = join(this.dir, name);
      let record: unknown;
      try {
        record = JSON.parse(readFileSync(file, 'utf8'));
      } catch {
        continue; // being written (never: renamed whole) or damaged: not ours to guess
      }
      if (!isRecord(record)) continue;
      let live = false;
      try {
        const st = statSync(record.path);
        live = st.dev === record.dev && st.ino === record.ino;
      } catch {
        live = false;
      }
      if (live) roots.push(record.path);
      else unlinkQuietly(file);
    }
    return roots;
  }

  /** The trees as a lookup, plus `extra` (this start's own, not recorded yet). */
  trees(extra: string[] = []): SandboxTrees {
    return sandboxTrees([...this.roots(), ...extra]);
  }

  /**
   * Records that `sandbox` can write the directory open as `fd` (real path `real`). Trees under
   * `<state>/sandboxes` are known without a record.
   */
  record(real: string, fd: number, sandbox: string, kind: TreeRecord['kind']): void {
    const storage = this.storageRoot();
    if (real === storage || real.startsWith(storage + '/')) return;
    const st = fstatSync(fd);
    const entry: TreeRecord = { path: real, sandbox, kind, dev: st.dev, ino: st.ino };
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    // Named by a key of the path; a record of another path under that name (a collision) is kept.
    const key = contentKey(real);
    let file = join(this.dir, `${key}.json`);
    for (let n = 1; ; n++) {
      const held = readRecord(file);
      if (held === null || held.path === real) break;
      file = join(this.dir, `${key}-${n}.json`);
    }
    const tmp = `${file}.${process.pid}`;
    writeFileSync(tmp, JSON.stringify(entry) + '\n', { mode: 0o600 });
    renameSync(tmp, file);
  }
}

function readRecord(file: string): TreeRecord | null {
  try {
    const record: unknown = JSON.parse(readFileSync(file, 'utf8'));
    return isRecord(record) ? record : null;
  } catch {
    return null;
  }
}

function unlinkQuietly(file: string): void {
  try {
    unlinkSync(file);
  } catch {
    // another start removed it first
  }
}

/** Closes fds, ignoring those already closed. */
export function closeAll(fds: Iterable<number>): void {
  for (const fd of fds) {
    try {
      closeSync(fd);
    } catch {
      // already closed
    }
  }
}
