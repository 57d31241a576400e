/**
 * The network side of `carapace run --policy FILE`: the sandbox's attachment to the runtime's
 * egress proxy, and the watch that applies saved policy changes live. Loaded only when a run has a
 * policy file (the built-in default policy has no network at all).
 */
import type { AuditSink } from '../audit/index.js';
import { compilePolicy, resolveLimits, type Policy } from '../policy/index.js';
import { sharedUpstreamTrust, type EgressProxy, type SandboxProxy } from '../proxy/index.js';
import { InferenceRouter, type ProviderConfig } from '../router/index.js';
import type { NetworkProvider } from '../sandbox/sandbox.js';
import { LivePolicy } from './policy-apply.js';
import { PolicyWatch } from './policy-watch.js';
import { egressNetwork } from './sandbox-network.js';

/** The network inputs of a run, parsed and checked by the CLI (src/cli/run/run-options.ts). */
export interface NetworkInput {
  /** The proxy's hosts map (`--resolve HOST=IP`). */
  hosts: Record<string, string>;
  /** `IP:PORT` upstreams the operator trusts although they are host-local. */
  allowLocal: string[];
  upstreamCaFile?: string | undefined;
  /** Credential name → value; the sandbox sees only placeholders. */
  credentials: Map<string, string>;
  /**
   * Stored providers by name, as the caller may use them (the CLI reads the caller's own
   * gateway's store, src/cli/run/run-providers.ts); null when there is no such provider.
   */
  providers?: ((name: string) => Promise<ProviderConfig | null>) | undefined;
}

/**
 * The run's router (inference.local): routes from the policy's inference section, stored providers
 * from `input.providers`, inline routes' keys from the run's credentials. Usage lives as long as
 * the run.
 */
export function runRouter(
  audit: AuditSink,
  input: NetworkInput,
  warn: (line: string) => void,
): InferenceRouter {
  return new InferenceRouter({
    audit,
    upstreamTrust: () => sharedUpstreamTrust(input.upstreamCaFile).context,
    providers: {
      named: (_sandbox, name) => input.providers?.(name) ?? null,
      credential: (_sandbox, name) => input.credentials.get(name),
    },
    onError: (err) => warn(`inference router: ${err instanceof Error ? err.message : String(err)}`),
  });
}

export class RunNetwork {
  private attached: SandboxProxy | null = null;
  private watcher: PolicyWatch | null = null;

  /** Attaches the sandbox to the proxy when it starts (see startSandbox's `network`). */
  readonly provider: NetworkProvider;

  constructor(
    proxy: EgressProxy,
    credentials: ReadonlyMap<string, string>,
    private readonly policy: Policy,
    private readonly audit: AuditSink,
    runDir: string,
  ) {
    this.provider = egressNetwork({
      proxy,
      heldBy: 'run',
      generation: compilePolicy(policy),
      credentials,
      limits: resolveLimits(policy),
      onAttached: (sb) => (this.attached = sb),
      runDir,
    });
  }

  /** Applies saves of `file` to the running sandbox's network, live. */
  watch(file: string, sandbox: string, warn: (line: string) => void): void {
    const proxy = this.attached;
    if (proxy === null) return; // the sandbox never attached: nothing runs to apply changes to
    const live = new LivePolicy({ sandbox, current: this.policy, audit: this.audit, target: proxy });
    this.watcher = new PolicyWatch({ file, live, warn });
  }

  close(): void {
    this.watcher?.close();
  }
}
