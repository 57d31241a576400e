/** A host-wide lock file (the uid registry's): who holds it, and taking it over from the dead. */
import { closeSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { processStart } from './processes.js';

/**
 * A lock file shared by every Carapace process on the host: created with O_EXCL, holding the
 * owner's pid and start time, taken over when its owner is gone (a crash). Waits asynchronously:
 * a server's event loop never blocks on another process.
 */
export class HostLock {
  private constructor(private readonly path: string) {}

  /** Waits up to `patienceMs` for the lock; then throws what `busy` makes. */
  static async take(path: string, patienceMs: number, busy: () => Error): Promise<HostLock> {
    const me = `${process.pid} ${processStart(process.pid) ?? 0}\n`;
    const deadline = Date.now() + patienceMs;
    for (;;) {
      try {
        const fd = openSync(path, 'wx', 0o600);
        writeSync(fd, me);
        closeSync(fd);
        return new HostLock(path);
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
    try {
      unlinkSync(this.path);
    } catch {
      // already gone
    }
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
