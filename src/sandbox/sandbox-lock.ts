/**
 * One process at a time may run a sandbox of a given name, and what it made for the sandbox is
 * written down as it is made, so that a process killed with SIGKILL leaves a record of its
 * leftovers for the next Carapace command to sweep (src/sandbox/sweep.ts).
 *
 * The lock is `<run>/sandboxes/<name>.lock`, created with O_EXCL, holding a JSON run record: the
 * owner's pid and start time (a pid alone could be reused by the time anyone looks), and the host
 * paths the run created. It lives in Carapace's own run directory (root's, or the user's), never in
 * a tree a sandbox can write, and it is rewritten whole through a rename.
 */
import { closeSync, mkdirSync, openSync, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { ownStart, processStart } from './processes.js';

export class SandboxBusyError extends Error {
  override name = 'SandboxBusyError';
  readonly code = 'SANDBOX_BUSY';
  readonly exitCode = 1;
}

/** What a run made on the host, for the sweep after a crash. Paths are absolute. */
export interface RunRecord {
  pid: number;
  /** The owner's start time (/proc/<pid>/stat field 22): with the pid, who holds the lock. */
  start: number;
  name: string;
  /** The state directory the sandbox belongs to (its uid record's owner). */
  state?: string;
  /** Generated files: passwd, hosts, CA, … */
  runtime?: string;
  /** The proxy socket's directory. */
  net?: string;
  /** The name of the sandbox's cgroup directory in every hierarchy (see cgroupParent). */
  cgroupKey?: string;
  /** Set when the workspace was temporary (removed at exit). */
  tempWorkspace?: string;
  /** Set when the run was ephemeral: its storage is removed and its uid released at exit. */
  ephemeralStorage?: string;
  /** Where the run's audit events go: the sweep appends a "lost" event there. */
  audit?: string;
  /** When the sandbox started (ISO time). */
  startedAt?: string;
}

/** What a run made, written to its record. */
type Facts = Partial<Omit<RunRecord, 'pid' | 'start' | 'name'>>;

export class SandboxLock {
  private record: RunRecord;

  private constructor(
    private readonly path: string,
    name: string,
    facts: Facts,
  ) {
    this.record = { pid: process.pid, start: ownStart() ?? 0, name, ...facts };
  }

  /** Takes the lock of `name`, its record holding `facts` from the first write. */
  static acquire(dir: string, name: string, facts: Facts = {}): SandboxLock {
    mkdirSync(dir, { recursive: true });
    const path = join(dir, `${name}.lock`);
    for (let attempt = 0; attempt < 2; attempt++) {
      const lock = new SandboxLock(path, name, facts);
      try {
        const fd = openSync(path, 'wx', 0o600);
        writeSync(fd, JSON.stringify(lock.record) + '\n');
        closeSync(fd);
        return lock;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        const owner = readRunRecord(path);
        if (owner && ownerAlive(owner)) {
          throw new SandboxBusyError(
            `sandbox "${name}" is already running (pid ${owner.pid}): stop it or pick another --name`,
          );
        }
        // Stale: its owner died without cleaning up. The sweep removes what it left; here only a
        // record without an owner (half-written) is in the way.
        if (owner === null) unlinkSync(path);
        else
          throw new SandboxBusyError(
            `sandbox "${name}" has leftovers of a crashed run: run carapace doctor to sweep them`,
          );
      }
    }
    throw new SandboxBusyError(`cannot lock sandbox "${name}": ${path}`);
  }

  /** Adds what the run made to its record, before it is used (so a crash after it is covered). */
  note(facts: Facts): void {
    this.record = { ...this.record, ...facts };
    const tmp = `${this.path}.${process.pid}.tmp`;
    const fd = openSync(tmp, 'w', 0o600);
    try {
      writeSync(fd, JSON.stringify(this.record) + '\n');
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, this.path);
  }

  /**
   * Makes `pid` (a detached sandbox's init, on the host) the record's owner: the sandbox outlives
   * the process that started it, so a sweep must see the record alive for as long as the sandbox
   * runs, and sweep what it left once it is gone. `start` is its start time, read while it could
   * not have exited yet (launch.ts).
   */
  handOver(pid: number, start: number): void {
    this.record = { ...this.record, pid, start };
    this.note({});
  }

  release(): void {
    try {
      unlinkSync(this.path);
    } catch {
      // already released
    }
  }
}

/** A lock file's run record; null when it is not one (half-written, or another format). */
export function readRunRecord(path: string): RunRecord | null {
  try {
    const r = JSON.parse(readFileSync(path, 'utf8')) as RunRecord;
    return Number.isInteger(r.pid) && typeof r.name === 'string' ? r : null;
  } catch {
    return null;
  }
}

/** Whether the process that wrote the record is still the one running under its pid. */
export function ownerAlive(r: RunRecord): boolean {
  const now = processStart(r.pid);
  return now !== null && (r.start === 0 || now === r.start);
}
