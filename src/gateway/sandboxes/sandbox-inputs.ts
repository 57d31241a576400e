/**
 * What a stored sandbox starts (or is re-adopted) with, besides its spec: its policy revision
 * parsed into the runtime's settings, its attachment to the shared proxy with its credentials
 * unsealed for the proxy only, and its host identity. Read at every start (sandbox-launcher.ts)
 * and re-adoption (sandbox-adoption.ts).
 */
import { join } from 'node:path';
import type { SandboxProxy } from '../../proxy/index.js';
import { settingsFromPolicy } from '../../runtime/policy-settings.js';
import type { Runtime } from '../../runtime/runtime.js';
import { egressNetwork } from '../../runtime/sandbox-network.js';
import {
  rootlessIdentity,
  type IdentityRegistry,
  type SandboxIdentity,
} from '../../sandbox/identity/identity.js';
import type { StateDirs } from '../../sandbox/state-dirs.js';
import { ApiError } from '../api/errors.js';
import { checkPolicyText } from '../policy-text.js';
import type { SandboxRecord, SandboxStore } from '../store/sandbox-store.js';
import type { SecretBox } from '../store/secret-box.js';

/** The sandbox's policy revision, its settings (with the user's default memory limit), and the engine that compiles it. */
export async function policyOf(store: SandboxStore, rec: SandboxRecord) {
  const revision = store.policy(rec.id, rec.spec.policyRev);
  if (!revision)
    throw new ApiError('INTERNAL', `sandbox ${rec.name} has no policy revision ${rec.spec.policyRev}`);
  const policy = await checkPolicyText(revision.text, `${rec.name}.yaml`);
  const engine = await import('../../policy/index.js');
  const settings = settingsFromPolicy(policy, engine.resolveLimits(policy));
  if (settings.limits.memoryBytes === undefined && rec.spec.memoryBytes !== null) {
    settings.limits.memoryBytes = rec.spec.memoryBytes;
  }
  return { policy, settings, engine };
}

/** The sandbox's attachment to the shared proxy (its credentials unsealed for the proxy only). */
export function egressOf(
  opts: { store: SandboxStore; secrets: SecretBox; runtime: Runtime; dirs: StateDirs },
  /** Where each sandbox's CA key is kept (`<state>/ca`). */
  caDir: string,
  rec: SandboxRecord,
  generation: import('../../policy/index.js').PolicyGeneration,
  limits: { memoryBytes?: number | undefined; cpuMillis?: number | undefined },
  reattach: boolean,
) {
  const credentials = new Map<string, string>();
  for (const [name, sealed] of opts.store.secrets(rec.id)) {
    credentials.set(name, opts.secrets.unseal(sealed, `${rec.id}/${name}`));
  }
  let proxy: SandboxProxy | null = null;
  const provider = async (name: string, identity: SandboxIdentity) =>
    egressNetwork({
      proxy: await opts.runtime.proxy(),
      heldBy: 'gateway',
      runDir: opts.dirs.run,
      generation,
      credentials,
      // What the proxy may spend on it derives from its limits (docs/proxy.md, budgets).
      limits,
      caDir: join(caDir, rec.id),
      onAttached: (sb) => (proxy = sb),
      reattach,
    })(name, identity);
  return { provider, proxy: () => proxy };
}

/** The host uid the sandbox runs as (its uid record; the gateway's user when rootless). */
export function identityOf(
  opts: { rootless: boolean; identities: IdentityRegistry | null; dirs: StateDirs },
  rec: SandboxRecord,
): SandboxIdentity {
  if (opts.rootless || !opts.identities) return rootlessIdentity();
  const uid = opts.identities.lookup({ state: opts.dirs.state, name: rec.id });
  if (uid === null) throw new ApiError('INTERNAL', `sandbox ${rec.name} has no uid record`);
  return { uid, gid: uid, rootless: false };
}
