/** A host-wide lock file (the uid registry's): who holds it, and taking it over from the dead. */
import { closeSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { ownStart, processStart } from '../processes.js';

/**
 * A lock file shared by every Carapace process on the host: created with O_EXCL, holding the
 * owner's pid and start time, taken over when its owner is gone (a crash). Waits asynchronously:
 * a server's event loop never blocks on another process.
 *
 * Within one process, takers queue for the file in turn instead of polling it: a gateway starting
 * and stopping sandboxes at once (or a start right after a stop's release) would otherwise find
 * its own lock file and sleep, ~2 ms a time, for nothing.
 */
export class HostLock {
  /** Per lock file: the end of this process's queue for it (settles when its holder releases). */
  private static readonly queues = new Map<string, Promise<void>>();
  private released = false;

  private constructor(
    private readonly path: string,
    private readonly done: () => void,
  ) {}

  /** Waits up to `patienceMs` for the lock; then throws what `busy` makes. */
  static async take(path: string, patienceMs: number, busy: () => Error): Promise<HostLock> {
    const deadline = Date.now() + patienceMs;
    const before = HostLock.queues.get(path);
    let done!: () => void;
    const mine = new Promise<void>((resolve) => (done = resolve));
    const tail = before ? before.then(() => mine) : mine;
    HostLock.queues.set(path, tail);
    const leave = () => {
      done();
      if (HostLock.queues.get(path) === tail) HostLock.queues.delete(path);
    };
    try {
      if (before) await waitUntil(before, deadline);
      if (before && Date.now() > deadline) throw busy();
      return await HostLock.takeFile(path, deadline, busy, leave);
    } catch (err) {
      leave();
      throw err;
    }
  }

  private static async takeFile(
    path: string,
    deadline: number,
    busy: () => Error,
    leave: () => void,
  ): Promise<HostLock> {
    const me = `${process.pid} ${ownStart() ?? 0}\n`;
    for (;;) {
      try {
        const fd = openSync(path, 'wx', 0o600);
        writeSync(fd, me);
        closeSync(fd);
        return new HostLock(path, leave);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      if (ownerGone(path)) {
        try {
          unlinkSync(path);
        } catch {
          // another process took it over first
        }
        continue;
      }
      if (Date.now() > deadline) {
        throw busy();
      }
      await sleep(2);
    }
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    try {
      unlinkSync(this.path);
    } catch {
      // already gone
    }
    this.done();
  }
}

/** Resolves when `p` settles or at `deadline`, whichever is first. */
async function waitUntil(p: Promise<void>, deadline: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, Math.max(0, deadline - Date.now()));
    timer.unref();
  });
  try {
    await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

function ownerGone(path: string): boolean {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return false; // just released, or being written: look again
  }
  const [pid, start] = text.trim().split(' ').map(Number);
  if (!pid) return text.endsWith('\n'); // a complete file without a pid: garbage
  const now = processStart(pid);
  return now === null || (start !== undefined && start !== 0 && now !== start);
}
