/** A policy sent to the gateway as text: validated in full, or refused with every diagnostic. */
import type { Policy } from '../policy/index.js';
import { ApiError } from './api/errors.js';

export async function checkPolicyText(text: string, file: string): Promise<Policy> {
  const engine = await import('../policy/index.js');
  const r = engine.parsePolicy(text, file);
  if (!r.ok) {
    const first = r.diagnostics[0]!;
    throw new ApiError(
      'POLICY_INVALID',
      `${first.file}:${first.line}:${first.col}: ${first.message}` +
        (r.diagnostics.length > 1 ? ` (and ${r.diagnostics.length - 1} more)` : ''),
      r.diagnostics,
    );
  }
  return r.policy;
}

/** The memory limit a policy sets, in bytes. */
export async function policyMemoryLimit(policy: Policy): Promise<number | undefined> {
  const engine = await import('../policy/index.js');
  return engine.resolveLimits(policy).memoryBytes;
}
