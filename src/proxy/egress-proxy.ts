/**
 * The host-side egress proxy: one Node process, one Unix socket per sandbox (each a SandboxProxy,
 * sandbox-proxy.ts).
 *
 * Threat: a sandboxed agent uses the network to leak data or spend credentials; one sandbox reaches
 * another's socket or policy. Assumptions:
 * - each sandbox has its own socket, policy generation, CA, credentials and caller resolver; nothing
 *   is shared between sandboxes except the operator's settings (hosts map, allowLocal, upstream CA),
 *   which this file holds;
 * - the rest (the socket's mode, policy swaps, raw tunnels re-judged) is SandboxProxy's: see there.
 */
import { AddressGuard, type Resolver } from './net/address-guard.js';
import type { AuditSink } from '../audit/index.js';
import { type InternalHost, InternalHosts } from './session/internal-host.js';
import { type AttachOptions, ProxyError, SandboxProxy } from './sandbox-proxy.js';
import { sharedUpstreamTrust, type UpstreamTrust } from './net/upstream.js';

export {
  type AttachOptions,
  type GenerationChange,
  type ProxyCounters,
  ProxyError,
  SandboxProxy,
} from './sandbox-proxy.js';

export interface EgressProxyOptions {
  audit: AuditSink;
  /** Operator hosts map (name → IP), replacing DNS for those names. */
  hosts?: Record<string, string> | undefined;
  /** Operator-trusted host-local upstreams, `IP:PORT` / `[IPv6]:PORT`. */
  allowLocal?: readonly string[] | undefined;
  /** PEM file of extra CAs trusted for upstream TLS (besides the system roots). */
  upstreamCaFile?: string | undefined;
  /** DNS replacement (tests). */
  resolver?: Resolver | undefined;
  /** Unexpected errors inside connection handlers (the connection is closed, the proxy goes on). */
  onError?: ((err: unknown, sandbox: string) => void) | undefined;
  /**
   * Path of native/carapace-pump: bulk raw tunnels are handed to it so their bytes move in a small
   * C process instead of this event loop. Without it every byte goes through Node.
   */
  tunnelPump?: string | undefined;
  /**
   * Names served inside this process instead of upstream (internal-host.ts): the router's
   * `inference.local`. Every sandbox reaches them, whatever its network policy.
   */
  internalHosts?: readonly InternalHost[] | undefined;
}

export class EgressProxy {
  readonly guard: AddressGuard;
  private readonly upstreamTrust: UpstreamTrust;
  private readonly attached = new Map<string, SandboxProxy>();
  private readonly internal: InternalHosts;

  constructor(private readonly options: EgressProxyOptions) {
    this.internal = new InternalHosts(options.internalHosts);
    this.guard = new AddressGuard({
      hosts: options.hosts,
      allowLocal: options.allowLocal,
      resolver: options.resolver,
    });
    this.upstreamTrust = sharedUpstreamTrust(options.upstreamCaFile);
  }

  async attachSandbox(options: AttachOptions): Promise<SandboxProxy> {
    if (this.attached.has(options.name)) throw new ProxyError(`sandbox ${options.name} is already attached`);
    const sb = new SandboxProxy(options, {
      audit: this.options.audit,
      guard: this.guard,
      upstreamTrust: this.upstreamTrust,
      onError: this.options.onError,
      onDetach: () => this.attached.delete(options.name),
      tunnelPump: this.options.tunnelPump ?? null,
      internal: this.internal,
    });
    this.attached.set(options.name, sb);
    try {
      await sb.listen();
    } catch (err) {
      this.attached.delete(options.name);
      throw err;
    }
    return sb;
  }

  get sandboxes(): string[] {
    return [...this.attached.keys()];
  }

  async close(): Promise<void> {
    await Promise.all([...this.attached.values()].map((s) => s.detach()));
  }
}
