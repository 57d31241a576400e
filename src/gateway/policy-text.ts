/** A policy sent to the gateway as text: validated in full, or refused with every diagnostic; what it allows a sandbox. */
import type { Policy } from '../policy/index.js';
import { ApiError } from './api/errors.js';
import type { Forward } from './store/sandbox-store.js';

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

/**
 * A forward reaches a listener inside, and the agent may listen only on its policy's listen_ports
 * (Landlock refuses any other bind): a forward to another port could never be answered, and
 * nothing would say why (a connection refused inside, no audit line).
 */
export function assertListenable(name: string, f: Forward, listenPorts: readonly number[] | undefined): void {
  if (listenPorts?.includes(f.sandboxPort)) return;
  throw new ApiError(
    'INVALID_INPUT',
    `port ${f.sandboxPort} is not one ${name} may listen on (its policy's listen_ports: ${listenPorts?.length ? listenPorts.join(', ') : 'none'}): ` +
      `add it to listen_ports (carapace policy set ${name} FILE --restart)`,
  );
}
