/**
 * Resource limits: the `limits` section in the units the sandbox applies (bytes, millicores).
 *
 * Memory units follow Kubernetes: K, M, G, T are powers of 1000; Ki, Mi, Gi, Ti powers of 1024.
 * CPU is cores (0.5, 2) or millicores as a string ("500m").
 */
import type { Policy } from './schema.js';

export interface ResolvedLimits {
  memoryBytes?: number;
  pids?: number;
  cpuMillis?: number;
  openFiles?: number;
}

const MEMORY_UNITS: Record<string, number> = {
  '': 1,
  K: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  Ki: 2 ** 10,
  Mi: 2 ** 20,
  Gi: 2 ** 30,
  Ti: 2 ** 40,
};

/** Minimum memory limit: below this nothing, not even the init, can start. */
const MIN_MEMORY = 4 * 2 ** 20;

export function parseMemoryBytes(value: number | string): number | { error: string } {
  let bytes: number;
  if (typeof value === 'number') {
    bytes = value;
  } else {
    const m = /^\s*(\d+(?:\.\d+)?)\s*(Ki|Mi|Gi|Ti|K|M|G|T)?\s*$/.exec(value);
    if (m === null) {
      return {
        error: `memory "${value}" is not a size; write bytes or a number with K, M, G, Ki, Mi or Gi (e.g. 512Mi, 2G)`,
      };
    }
    bytes = Math.round(Number(m[1]) * (MEMORY_UNITS[m[2] ?? ''] ?? 1));
  }
  if (!Number.isSafeInteger(bytes) || bytes < MIN_MEMORY) {
    return { error: `memory ${JSON.stringify(value)} is too small; the minimum is 4Mi` };
  }
  return bytes;
}

export function parseCpuMillis(value: number | string): number | { error: string } {
  let millis: number;
  if (typeof value === 'number') {
    millis = Math.round(value * 1000);
  } else {
    const m = /^\s*(\d+(?:\.\d+)?)\s*(m)?\s*$/.exec(value);
    if (m === null) {
      return { error: `cpu "${value}" is not a CPU amount; write cores (0.5, 2) or millicores ("500m")` };
    }
    millis = m[2] === 'm' ? Math.round(Number(m[1])) : Math.round(Number(m[1]) * 1000);
  }
  if (!Number.isFinite(millis) || millis < 10) {
    return { error: `cpu ${JSON.stringify(value)} is too small; the minimum is 10m (0.01 cores)` };
  }
  return millis;
}

/**
 * The policy's limits in applied units. Assumes a validated policy; an invalid value (only
 * possible for an unvalidated object) is left out rather than guessed.
 */
export function resolveLimits(policy: Policy): ResolvedLimits {
  const limits = policy.limits;
  const out: ResolvedLimits = {};
  if (limits === undefined) return out;
  if (limits.memory !== undefined) {
    const bytes = parseMemoryBytes(limits.memory);
    if (typeof bytes === 'number') out.memoryBytes = bytes;
  }
  if (limits.cpu !== undefined) {
    const millis = parseCpuMillis(limits.cpu);
    if (typeof millis === 'number') out.cpuMillis = millis;
  }
  if (limits.pids !== undefined) out.pids = limits.pids;
  if (limits.open_files !== undefined) out.openFiles = limits.open_files;
  return out;
}
