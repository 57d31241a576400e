/**
 * Host identities for sandboxes.
 *
 * Threat: two sandboxes sharing a host uid could read each other's workspaces and signal each
 * other's processes; a sandbox running as host root would turn any kernel bug in the user namespace
 * code into host root. So, when Carapace runs as root, every sandbox gets its own unprivileged host
 * uid/gid from a reserved range; inside the sandbox it is always `sandbox`, uid/gid 1000.
 * Run as a normal user (rootless), a sandbox maps to that user: it cannot be anyone else.
 *
 * Allocation is crash-safe and race-free between concurrent `carapace` processes: a uid is taken by
 * creating `<state>/identities/uid-<n>` with O_EXCL; the name → uid record is a second file. Both
 * are removed when the sandbox is deleted (or, for an unnamed one-off run, when it exits), and the
 * lowest free uid is reused.
 */
import { mkdirSync, openSync, closeSync, readFileSync, unlinkSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';

export const SANDBOX_UID_INSIDE = 1000;
export const DEFAULT_UID_BASE = 3_000_000;
export const UID_RANGE_SIZE = 65_536;

export interface SandboxIdentity {
  /** Host uid and gid the sandbox's processes run as. */
  uid: number;
  gid: number;
  /** True when the identity is our own process's (rootless mode). */
  rootless: boolean;
}

export class IdentityError extends Error {
  override name = 'IdentityError';
  readonly exitCode = 1;
}

const NAME_RE = /^[a-z0-9][a-z0-9_.-]{0,62}$/;

export function assertSandboxName(name: string): void {
  if (!NAME_RE.test(name)) {
    throw new IdentityError(
      `invalid sandbox name "${name}": use 1-63 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit`,
    );
  }
}

export class IdentityRegistry {
  private readonly dir: string;

  constructor(
    stateDir: string,
    private readonly base = Number(process.env.CARAPACE_UID_BASE ?? DEFAULT_UID_BASE),
  ) {
    this.dir = join(stateDir, 'identities');
  }

  /** The identity for `name`: the one recorded for it, or a newly allocated one. */
  acquire(name: string): SandboxIdentity {
    assertSandboxName(name);
    const uid = process.getuid?.() ?? 0;
    if (uid !== 0) return { uid, gid: process.getgid?.() ?? uid, rootless: true };
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    const recorded = this.lookup(name);
    if (recorded !== null) return { uid: recorded, gid: recorded, rootless: false };
    for (let n = this.base; n < this.base + UID_RANGE_SIZE; n++) {
      let fd: number;
      try {
        fd = openSync(join(this.dir, `uid-${n}`), 'wx', 0o600);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EEXIST') continue;
        throw err;
      }
      writeSync(fd, name + '\n');
      closeSync(fd);
      writeFileSync(join(this.dir, `name-${name}`), `${n}\n`, { mode: 0o600 });
      return { uid: n, gid: n, rootless: false };
    }
    throw new IdentityError(
      `no free sandbox uid in ${this.base}-${this.base + UID_RANGE_SIZE - 1}: delete unused sandboxes`,
    );
  }

  lookup(name: string): number | null {
    try {
      const n = Number(readFileSync(join(this.dir, `name-${name}`), 'utf8').trim());
      return Number.isInteger(n) ? n : null;
    } catch {
      return null;
    }
  }

  /** Frees the identity of `name` so that a later sandbox can reuse its uid. */
  release(name: string): void {
    const uid = this.lookup(name);
    if (uid === null) return;
    for (const f of [`uid-${uid}`, `name-${name}`]) {
      try {
        unlinkSync(join(this.dir, f));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
    }
  }
}
