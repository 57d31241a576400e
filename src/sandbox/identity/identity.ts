/**
 * Host identities for sandboxes.
 *
 * Threat: two sandboxes sharing a host uid could read each other's files and signal each other's
 * processes; a sandbox running as host root would turn any kernel bug in the user namespace code
 * into host root. So, when Carapace runs as root, every sandbox gets its own unprivileged host
 * uid/gid from a reserved range; inside the sandbox it is always `sandbox`, uid/gid 1000.
 * Run as a normal user (rootless), a sandbox maps to that user: it cannot be anyone else.
 *
 * A uid outlives its sandbox in the files it owns: the workspace, the sandbox's storage, whatever a
 * user copied out of them. Handing that uid to another sandbox would give the newcomer those files
 * wherever its mounts can reach them (a policy that binds /home read-only, and a 0600 file of the
 * old sandbox's there, is enough). So:
 * - The registry is one per host, not per state directory: two state directories (two users'
 *   CARAPACE_HOME, or tests) never hand out the same uid. It lives in a root-only directory and is
 *   changed under a host-wide lock file, written whole as a new generation that a link is renamed
 *   onto (identity-file.ts).
 * - Each record binds a uid to its owner (state directory + sandbox name) and to the paths it was
 *   handed (workspace, storage). A record is dropped only once none of those paths still holds
 *   anything of the uid at its root (gone, or handed over to another uid): until then the uid is
 *   not free, even after the sandbox that had it is forgotten. Such a record goes when its
 *   sandbox is released, or when its owner's state directory no longer exists (removed by hand,
 *   or a test's home: 2,652 of those once made every start read and rewrite a 580 KB file).
 * - Allocation is monotonic over the range (a `next` cursor that wraps), so a freed uid is the last
 *   to be handed out again; on wrapping, stale records are checked again before reuse.
 * - A power cut must not hand out a uid twice. Each change is renamed into place without waiting
 *   for the disk; what is flushed (file and directory) is a `fence`: a cursor position every uid
 *   handed out lies before. An allocation that reaches the fence moves it FENCE_AHEAD uids on and
 *   flushes first (one start in FENCE_AHEAD pays the ~0.5 ms, not each). The file records the
 *   boot it was written in; read in a later boot (the crash, or any reboot), allocation resumes at
 *   the fence, past anything a lost write may have handed out.
 * - What is read is validated: a record outside the configured range, below 1000, or malformed
 *   stops every allocation with an error naming the file (fail closed, never guess).
 */
import { chmodSync, existsSync, lstatSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { HostLock } from './host-lock.js';
import {
  bootId,
  LOWEST_SANDBOX_UID,
  readRegistry,
  RegistryFileError,
  writeRegistry,
  type RegistryFile,
} from './identity-file.js';
import { randomHex } from '../keys.js';
import { runningUids } from '../processes.js';

export const SANDBOX_UID_INSIDE = 1000;
export const DEFAULT_UID_BASE = 3_000_000;
export const UID_RANGE_SIZE = 65_536;
/**
 * A record whose owner's state directory is gone is dropped once it is this old (see change): a
 * start makes the state directory before it records a uid, so only a record whose home was
 * removed while it started is young and ownerless. An hour once, when a test suite's homes (500
 * records in one run) made every start read and rewrite a 120 KB file: ~1 ms of each start.
 */
const ORPHAN_AFTER_MS = 10 * 60 * 1000;
/**
 * How often every record is checked for being an orphan. The check lstats each record's paths,
 * and a host's registry holds hundreds of records: run at every allocation and release, it was
 * ~3 ms of each sandbox start. Released records are checked at every change (they are few).
 */
const SWEEP_EVERY_MS = 10 * 60 * 1000;
/** How many uids an allocation that reaches the fence reserves ahead of it (see the header). */
const FENCE_AHEAD = 64;
/** How long a start waits for another process's registry change before giving up. */
const LOCK_PATIENCE_MS = 10_000;

export interface SandboxIdentity {
  /** Host uid and gid the sandbox's processes run as. */
  uid: number;
  gid: number;
  /** True when the identity is our own process's (rootless mode). */
  rootless: boolean;
}

export type IdentityErrorCode =
  'INVALID_SANDBOX_NAME' | 'UID_RANGE_EXHAUSTED' | 'UID_REGISTRY_INVALID' | 'UID_REGISTRY_BUSY';

export class IdentityError extends Error {
  override name = 'IdentityError';
  readonly exitCode = 1;
  constructor(
    message: string,
    readonly code: IdentityErrorCode,
  ) {
    super(message);
  }
}

const NAME_RE = /^[a-z0-9][a-z0-9_.-]{0,62}$/;
/** The name of a record whose sandbox is gone but whose paths still hold files of its uid. */
const RELEASED = 'released.';

export function assertSandboxName(name: string): void {
  if (!NAME_RE.test(name)) {
    throw new IdentityError(
      `invalid sandbox name "${name}": use 1-63 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit`,
      'INVALID_SANDBOX_NAME',
    );
  }
}

/** The identity of a rootless sandbox: the calling user's own. */
export function rootlessIdentity(): SandboxIdentity {
  const uid = process.getuid?.() ?? 0;
  return { uid, gid: process.getgid?.() ?? uid, rootless: true };
}

/** Who a uid belongs to: a sandbox name within one state directory. */
export interface IdentityOwner {
  state: string;
  name: string;
}

export interface IdentityRecord extends IdentityOwner {
  uid: number;
  /** Host paths handed to the uid (workspace, storage): it is not free while one still is its. */
  paths: string[];
  /** When the uid was allocated (ISO time), for people reading the file. */
  since: string;
}

export interface RegistryOptions {
  /** Root-only host directory holding the registry (one per host: see hostIdentityDir). */
  dir: string;
  base?: number;
  size?: number;
  /** This boot's id (default: the kernel's boot_id; '' where it cannot be read). */
  bootId?: () => string;
}

/** The host-wide registry's directory, whatever the state directory: the range is per host. */
export const HOST_IDENTITY_DIR = '/var/lib/carapace/uids';

export class IdentityRegistry {
  readonly dir: string;
  readonly base: number;
  readonly size: number;
  private readonly file: string;
  private readonly bootId: () => string;

  constructor(opts: RegistryOptions) {
    this.dir = opts.dir;
    this.bootId = opts.bootId ?? bootId;
    this.base = opts.base ?? DEFAULT_UID_BASE;
    this.size = opts.size ?? UID_RANGE_SIZE;
    this.file = join(this.dir, 'registry.json');
    if (
      !Number.isInteger(this.base) ||
      this.base < LOWEST_SANDBOX_UID ||
      this.base + this.size > 2 ** 32 - 2
    ) {
      throw new IdentityError(
        `sandbox uid range ${this.base}+${this.size} is not usable: it must start at ${LOWEST_SANDBOX_UID} or above and end below 2^32-2`,
        'UID_REGISTRY_INVALID',
      );
    }
  }

  /**
   * The uid of `owner`: the one recorded for it, or a new one. `paths` (workspace, storage) are
   * bound to the uid for as long as they hold anything of it. With `adopt`, a workspace left by an
   * earlier sandbox whose uid was released but still owns it is taken over with that uid (an
   * unnamed run on a kept workspace: no need to hand the whole tree to a new uid).
   */
  async acquire(owner: IdentityOwner, paths: string[], adopt?: string): Promise<SandboxIdentity> {
    assertSandboxName(owner.name);
    return this.change((reg, flush) => {
      let rec = reg.records.find((r) => r.state === owner.state && r.name === owner.name);
      if (!rec && adopt !== undefined) {
        rec = reg.records.find(
          (r) => r.name.startsWith(RELEASED) && r.paths.includes(adopt) && ownsRoot(r.uid, adopt),
        );
        if (rec) Object.assign(rec, { state: owner.state, name: owner.name });
      }
      if (!rec) {
        const uid = this.allocate(reg, flush);
        rec = { uid, state: owner.state, name: owner.name, paths: [], since: new Date().toISOString() };
        reg.records.push(rec);
      }
      for (const p of paths) if (!rec.paths.includes(p)) rec.paths.push(p);
      return { uid: rec.uid, gid: rec.uid, rootless: false };
    });
  }

  /** The uid recorded for `owner`, or null. */
  lookup(owner: IdentityOwner): number | null {
    const reg = this.read();
    return reg.records.find((r) => r.state === owner.state && r.name === owner.name)?.uid ?? null;
  }

  /** Every record, for the crash sweep and for tests. */
  records(): IdentityRecord[] {
    return this.read().records;
  }

  /**
   * Forgets `owner`'s uid if none of its paths still holds anything of it; otherwise the record
   * stays (the uid is not free yet) and is dropped on a later allocation once they are gone.
   * Returns whether the uid was freed.
   */
  async release(owner: IdentityOwner): Promise<boolean> {
    return this.change((reg) => {
      const i = reg.records.findIndex((r) => r.state === owner.state && r.name === owner.name);
      if (i < 0) return true;
      const rec = reg.records[i]!;
      if (holdsAnything(rec)) {
        // Kept, but no longer the owner's: a later sandbox of that name gets a new uid.
        rec.name = `${RELEASED}${randomHex(4)}`;
        return false;
      }
      reg.records.splice(i, 1);
      return true;
    });
  }

  private read(): RegistryFile {
    try {
      const validName = (name: string) => NAME_RE.test(name) || name.startsWith(RELEASED);
      return readRegistry(this.file, this, validName, this.bootId);
    } catch (err) {
      if (err instanceof RegistryFileError) throw new IdentityError(err.message, 'UID_REGISTRY_INVALID');
      throw err;
    }
  }

  /** How far `to` lies after `from` on the cursor's circle. */
  private ahead(from: number, to: number): number {
    return (((to - from) % this.size) + this.size) % this.size;
  }

  private allocate(reg: RegistryFile, flush: { needed: boolean }): number {
    const taken = new Map(reg.records.map((r) => [r.uid, r]));
    const start = reg.next;
    for (let i = 0; i < this.size; i++) {
      const uid = this.base + ((start - this.base + i) % this.size);
      const rec = taken.get(uid);
      if (rec) {
        if (!rec.name.startsWith(RELEASED) || holdsAnything(rec)) continue;
        reg.records.splice(reg.records.indexOf(rec), 1); // stale: nothing of it is left
      }
      reg.next = uid + 1 >= this.base + this.size ? this.base : uid + 1;
      // At or past the fence: a crash after this write could lose the uid's record and the
      // cursor, so the fence moves on and reaches the disk before the uid is used.
      if (reg.fence === undefined || this.ahead(start, uid) >= this.ahead(start, reg.fence)) {
        reg.fence = this.base + ((reg.next - this.base + FENCE_AHEAD) % this.size);
        flush.needed = true;
      }
      return uid;
    }
    throw new IdentityError(
      `no free sandbox uid in ${this.base}-${this.base + this.size - 1}: delete unused sandboxes and their workspaces`,
      'UID_RANGE_EXHAUSTED',
    );
  }

  /**
   * Runs `fn` on the registry under the host-wide lock and writes the result atomically, when it
   * changed: flushed to disk (file and directory) when `fn` moved the fence, renamed into place
   * without waiting otherwise (the fence covers what a power cut may lose: see the header).
   */
  private async change<T>(fn: (reg: RegistryFile, flush: { needed: boolean }) => T): Promise<T> {
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    chmodSync(this.dir, 0o700);
    const lockFile = join(this.dir, 'lock');
    const lock = await HostLock.take(
      lockFile,
      LOCK_PATIENCE_MS,
      () =>
        new IdentityError(
          `the sandbox uid registry is locked by another process (${lockFile}); try again, or remove the file if no carapace process runs`,
          'UID_REGISTRY_BUSY',
        ),
    );
    try {
      const reg = this.read();
      const before = JSON.stringify(reg);
      const boot = this.bootId();
      if (reg.boot !== boot) {
        // Written in an earlier boot: its last writes may be lost with their uids; resume past them.
        if (reg.fence !== undefined) reg.next = reg.fence;
        reg.boot = boot;
      }
      // Without a boot id no reboot can be told apart: every allocation is flushed (after the
      // resume above, which a file written where there was one still needs).
      if (boot === '') delete reg.fence;
      // Records whose paths hold nothing of their uid any more are dropped as we pass when the uid
      // was released, or when its owner's state directory is gone (removed without deleting its
      // sandboxes: nothing will ever ask for that owner's uid again) and no process runs as the
      // uid (a sandbox outlives its gateway, and its home's removal). A record younger than ten
      // minutes is never taken for orphaned: its start may not have made its directories yet.
      const now = Date.now();
      // (A time ahead of the clock, set before the clock was moved back, sweeps too.)
      const sweep = reg.sweptAt === undefined || now < reg.sweptAt || now - reg.sweptAt >= SWEEP_EVERY_MS;
      let running: Set<number> | null = null;
      reg.records = reg.records.filter((r) => {
        if (!sweep && !r.name.startsWith(RELEASED)) return true;
        if (holdsAnything(r)) return true;
        if (r.name.startsWith(RELEASED)) return false;
        if (existsSync(r.state) || now - Date.parse(r.since) < ORPHAN_AFTER_MS) return true;
        running ??= runningUids();
        return running.has(r.uid);
      });
      if (sweep) reg.sweptAt = now;
      const flush = { needed: false };
      const result = fn(reg, flush);
      const text = JSON.stringify(reg);
      if (text !== before) writeRegistry(this.dir, this.file, text, flush.needed);
      return result;
    } finally {
      lock.release();
    }
  }
}

/**
 * Whether any path of the record still holds something of its uid at its root. Only the root is
 * looked at (a walk would cost a start as much as the tree is large): a tree handed to another uid
 * has a new owner at its root; docs/security.md names what this leaves (hard links kept in a tree).
 */
function holdsAnything(rec: IdentityRecord): boolean {
  return rec.paths.some((p) => ownsRoot(rec.uid, p));
}

function ownsRoot(uid: number, path: string): boolean {
  try {
    return lstatSync(path).uid === uid;
  } catch {
    return false;
  }
}

/** The host's registry when Carapace runs as root; null when rootless (no uids to hand out). */
export function hostIdentities(base?: number): IdentityRegistry | null {
  if ((process.getuid?.() ?? 0) !== 0) return null;
  return new IdentityRegistry({ dir: HOST_IDENTITY_DIR, ...(base !== undefined ? { base } : {}) });
}
