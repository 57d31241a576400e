/** One process at a time may run a sandbox of a given name: a lock file holding the owner's pid. */
import { closeSync, mkdirSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';

export class SandboxBusyError extends Error {
  override name = 'SandboxBusyError';
  readonly exitCode = 1;
}

export class SandboxLock {
  private constructor(private readonly path: string) {}

  static acquire(dir: string, name: string): SandboxLock {
    mkdirSync(dir, { recursive: true });
    const path = join(dir, `${name}.lock`);
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        const fd = openSync(path, 'wx', 0o600);
        writeSync(fd, `${process.pid}\n`);
        closeSync(fd);
        return new SandboxLock(path);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        const owner = Number(readFileSync(path, 'utf8').trim());
        if (isAlive(owner)) {
          throw new SandboxBusyError(
            `sandbox "${name}" is already running (pid ${owner}): stop it or pick another --name`,
          );
        }
        unlinkSync(path); // stale: its owner died without cleaning up
      }
    }
    throw new SandboxBusyError(`cannot lock sandbox "${name}": ${path}`);
  }

  release(): void {
    try {
      unlinkSync(this.path);
    } catch {
      // already released
    }
  }
}

function isAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
