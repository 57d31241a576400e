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
 * nothing would say why (a connection refused inside, no audit line). Where to add the port
 * depends on where the policy is: `creating` a sandbox, in the policy it is created with (or one
 * to write: the default lists none); else in its stored policy, set again with a restart
 * (listen_ports are fixed at its start). `details` lets a client name the file (the CLI does).
 */
export function assertListenable(
  name: string,
  f: Forward,
  listenPorts: readonly number[] | undefined,
  creating?: 'given' | 'default',
): void {
  if (listenPorts?.includes(f.sandboxPort)) return;
  const list = listenPorts?.length ? listenPorts.join(', ') : 'none';
  const port = f.sandboxPort;
  const [whose, fix] =
    creating === 'given'
      ? ["its policy's", `add ${port} to the listen_ports of the policy it is created with`]
      : creating === 'default'
        ? ["the default policy's", `create it with a policy whose listen_ports lists ${port}`]
        : ["its policy's", `add it to listen_ports (carapace policy set ${name} FILE --restart)`];
  throw new ApiError(
    'FORWARD_NOT_LISTENABLE',
    `port ${port} is not one ${name} may listen on (${whose} listen_ports: ${list}): ${fix}`,
    { sandboxPort: port, listenPorts: listenPorts ?? [] },
  );
}
