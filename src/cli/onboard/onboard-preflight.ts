/**
 * onboard's checks before it changes anything: the host (what `carapace doctor` checks, reduced to
 * a verdict: a capability no sandbox can start without stops onboarding with doctor's fix; a
 * degraded one is said and passed), and the model provider it is about to store.
 */
import type { OnboardAnswers } from '../../blueprint/onboard-answers.js';
import type { ProviderType } from '../../policy/index.js';
import { probeHost } from '../../sandbox/host-capabilities.js';
import { UsageError } from '../errors.js';

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

/**
 * One request to the provider's model list before it is stored or changed: a URL nothing answers
 * at, or a key the provider refuses, would otherwise only show at the agent's first call, with a
 * sandbox made and (for a shared provider) other sandboxes' route repointed. Without a key (an
 * existing provider keeps its sealed one) only "no answer" counts. A 404 or another error status
 * is an answer: OpenAI-compatible servers need not list models.
 */
export async function checkProviderAnswers(
  ctx: { upstreamCa?: string | undefined },
  p: NonNullable<OnboardAnswers['provider']>,
  baseUrl: string,
  key: string | undefined,
): Promise<void> {
  const [{ probeProvider }, { sharedUpstreamTrust }] = await Promise.all([
    import('../../router/probe.js'),
    import('../../proxy/net/upstream.js'),
  ]);
  const trust = sharedUpstreamTrust(ctx.upstreamCa);
  const r = await probeProvider(
    { name: p.name, type: p.type as ProviderType, baseUrl, apiKey: key },
    { timeoutMs: 20_000, upstreamTrust: () => trust.context },
  );
  const fix =
    `no provider or sandbox was made or changed; check --provider-url${p.credentialEnv !== undefined ? ` and ${p.credentialEnv}` : ''}, ` +
    `then carapace onboard --resume`;
  if (r.status === null)
    throw new UsageError(
      `provider ${p.name} at ${baseUrl} does not answer (${r.error ?? 'no answer'}): ${fix}`,
      1,
    );
  if (key !== undefined && (r.status === 401 || r.status === 403))
    throw new UsageError(
      `provider ${p.name} at ${baseUrl} refused the key (status ${r.status}: ${r.error ?? ''}): ${fix}`,
      1,
    );
}
