/**
 * onboard's preflight: what `carapace doctor` checks, reduced to a verdict. A capability no
 * sandbox can start without stops onboarding with doctor's fix; a degraded one is said and passed.
 */
import { probeHost } from '../sandbox/host-capabilities.js';
import { UsageError } from './errors.js';

const REQUIRED = new Set(['bwrap', 'userns', 'seccomp']);

export function preflight(state: string, say: (line: string) => void): void {
  const host = probeHost(state);
  const fatal = host.capabilities.filter((c) => c.status === 'missing' && REQUIRED.has(c.id));
  if (fatal.length > 0) {
    const c = fatal[0]!;
    throw new UsageError(
      `preflight: ${c.title} is missing (${c.detail})${c.fix ? `; fix: ${c.fix}` : ''} — carapace doctor says more`,
      1,
    );
  }
  const degraded = host.capabilities.filter((c) => c.status !== 'ok').map((c) => c.title);
  say(
    `preflight: ok${degraded.length > 0 ? ` (degraded: ${degraded.join(', ')}; carapace doctor says how to fix)` : ''}`,
  );
}
