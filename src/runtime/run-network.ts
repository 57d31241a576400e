/**
 * The network side of `carapace run --policy FILE`: the sandbox's attachment to the runtime's
 * egress proxy, and the watch that applies saved policy changes live. Loaded only when a run has a
 * policy file (the built-in default policy has no network at all).
 */
import type { AuditSink } from '../audit/index.js';
import { compilePolicy, resolveLimits, type Policy } from '../policy/index.js';
import type { EgressProxy, SandboxProxy } from '../proxy/index.js';
import type { NetworkProvider } from '../sandbox/sandbox.js';
import { LivePolicy } from './policy-apply.js';
import { PolicyWatch } from './policy-watch.js';
import { egressNetwork } from './sandbox-network.js';

/** The network inputs of a run, parsed and checked by the CLI (src/cli/run-options.ts). */
export interface NetworkInput {
  /** The proxy's hosts map (`--resolve HOST=IP`). */
  hosts: Record<string, string>;
  /** `IP:PORT` upstreams the operator trusts although they are host-local. */
  allowLocal: string[];
  upstreamCaFile?: string | undefined;
  /** Credential name → value; the sandbox sees only placeholders. */
  credentials: Map<string, string>;
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
