/**
 * What one user's sandboxes may add up to on a gateway: how many, and their memory limits
 * (`gateway run --max-sandboxes`, `--max-memory`); a user's sandbox whose policy sets no memory
 * limit gets `--default-memory` (at most what is left), so it counts like any other. Root and
 * members of carapace-admin are not limited.
 *
 * One account per gateway, shared by what holds sandboxes for a user: the stored ones
 * (sandbox-service.ts) and `carapace run`'s, which are not stored and are counted here while
 * their run lasts (one-off-runs.ts, `hold`). Both are refused alike, QUOTA_EXCEEDED.
 */
import { ApiError } from '../api/errors.js';
import type { Caller } from '../api/router.js';
import type { SandboxStore } from '../store/sandbox-store.js';

export interface Quotas {
  /** Sandboxes one user may hold (admins are not limited). */
  sandboxes: number;
  /** Bytes of memory limits one user's sandboxes may add up to. */
  memoryBytes: number;
  /** The memory limit of a user's sandbox whose policy sets none (at most what is left). */
  defaultMemoryBytes: number;
}

export const DEFAULT_QUOTAS: Quotas = {
  sandboxes: 32,
  memoryBytes: 16 * 2 ** 30,
  defaultMemoryBytes: 2 * 2 ** 30,
};

/** What a user holds outside the store: the sandboxes of their runs in progress. */
interface Held {
  sandboxes: number;
  memoryBytes: number;
}

export class UserQuotas {
  private readonly held = new Map<number, Held>();

  constructor(
    private readonly store: SandboxStore,
    private readonly quotas: Quotas,
  ) {}

  /**
   * The memory limit of a new sandbox of `caller` whose policy sets none: the default, at most
   * what is left; none for an admin.
   */
  defaultMemory(caller: Caller): number | null {
    if (caller.admin) return null;
    return Math.min(this.quotas.defaultMemoryBytes, this.memoryLeft(caller));
  }

  /** Refuses a new sandbox (of `memoryBytes`) that would take `caller` past a quota. */
  check(caller: Caller, memoryBytes: number | undefined): void {
    if (caller.admin) return;
    const runs = this.held.get(caller.uid)?.sandboxes ?? 0;
    const count = this.store.list(caller.uid).length + runs;
    if (count >= this.quotas.sandboxes) {
      throw new ApiError(
        'QUOTA_EXCEEDED',
        `you hold ${count} sandboxes` +
          (runs > 0 ? ` (${runs} of them ${runs === 1 ? 'a carapace run' : 'carapace runs'})` : '') +
          `, the most one user may (${this.quotas.sandboxes}): delete one first`,
      );
    }
    const used = this.memoryUsed(caller);
    const left = this.quotas.memoryBytes - used;
    if (left <= 0 || (memoryBytes !== undefined && memoryBytes > left)) {
      throw new ApiError(
        'QUOTA_EXCEEDED',
        `your sandboxes' memory limits add up to ${gib(used)} of the ${gib(this.quotas.memoryBytes)} one user may hold` +
          (memoryBytes !== undefined ? `; this policy asks for ${gib(memoryBytes)}` : '') +
          ': delete a sandbox or lower limits.memory',
      );
    }
  }

  /**
   * Counts a sandbox of `caller` that is not stored (a run's) once `check` allows it; the
   * returned function gives it back (once, however often it is called). Checked and counted with
   * nothing awaited between: two runs at once cannot both take the last place.
   */
  hold(caller: Caller, memoryBytes: number | null): () => void {
    this.check(caller, memoryBytes ?? undefined);
    if (caller.admin) return () => {};
    const add = (sign: 1 | -1) => {
      const h = this.held.get(caller.uid) ?? { sandboxes: 0, memoryBytes: 0 };
      h.sandboxes += sign;
      h.memoryBytes += sign * (memoryBytes ?? 0);
      if (h.sandboxes > 0) this.held.set(caller.uid, h);
      else this.held.delete(caller.uid);
    };
    add(1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      add(-1);
    };
  }

  private memoryUsed(caller: Caller): number {
    const stored = this.store.list(caller.uid).reduce((sum, r) => sum + (r.spec.memoryBytes ?? 0), 0);
    return stored + (this.held.get(caller.uid)?.memoryBytes ?? 0);
  }

  private memoryLeft(caller: Caller): number {
    return Math.max(0, this.quotas.memoryBytes - this.memoryUsed(caller));
  }
}

const gib = (bytes: number) => `${(bytes / 2 ** 30).toFixed(bytes % 2 ** 30 === 0 ? 0 : 1)} GiB`;
