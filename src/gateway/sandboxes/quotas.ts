/**
 * What one user's sandboxes may add up to on a gateway: how many, and their memory limits
 * (`gateway run --max-sandboxes`, `--max-memory`); a user's sandbox whose policy sets no memory
 * limit gets `--default-memory` (at most what is left), so it counts like any other. Root and
 * members of carapace-admin are not limited.
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

export class UserQuotas {
  constructor(
    private readonly store: SandboxStore,
    private readonly quotas: Quotas,
  ) {}

  /** The memory limit of a new sandbox of `caller` whose policy sets none. */
  defaultMemory(caller: Caller): number {
    return Math.min(this.quotas.defaultMemoryBytes, this.memoryLeft(caller));
  }

  /** Refuses a new sandbox (of `memoryBytes`) that would take `caller` past a quota. */
  check(caller: Caller, memoryBytes: number | undefined): void {
    if (caller.admin) return;
    const mine = this.store.list(caller.uid);
    if (mine.length >= this.quotas.sandboxes) {
      throw new ApiError(
        'QUOTA_EXCEEDED',
        `you hold ${mine.length} sandboxes, the most one user may (${this.quotas.sandboxes}): delete one first`,
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

  private memoryUsed(caller: Caller): number {
    return this.store.list(caller.uid).reduce((sum, r) => sum + (r.spec.memoryBytes ?? 0), 0);
  }

  private memoryLeft(caller: Caller): number {
    return Math.max(0, this.quotas.memoryBytes - this.memoryUsed(caller));
  }
}

const gib = (bytes: number) => `${(bytes / 2 ** 30).toFixed(bytes % 2 ** 30 === 0 ? 0 : 1)} GiB`;
