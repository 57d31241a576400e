/**
 * The runtime: one egress proxy and the sandboxes it serves, each a ManagedSandbox started through
 * a driver. `carapace run` is a runtime with one sandbox; the gateway is one with many.
 *
 * The proxy is made on first use (a runtime whose sandboxes have no network never loads it) and
 * shared by every sandbox: each sandbox's own socket tells the proxy who is calling, and each
 * sandbox's budgets bound what the proxy does for it.
 */
import type { AuditSink } from '../audit/index.js';
import type { MaskCheck } from '../sandbox/mounts/mask-guard.js';
import type { EgressProxy, InternalHost } from '../proxy/index.js';
import { nativeTunnelPump } from '../sandbox/native-paths.js';
import type { DriverSandbox, DriverStartRequest, SandboxDriver } from './driver.js';
import { ManagedSandbox } from './managed-sandbox.js';
import { MaskFindings } from './mask-findings.js';
import { RuntimeError } from './driver.js';

export interface ProxySettings {
  /** The proxy's hosts map (`--resolve`). */
  hosts: Record<string, string>;
  /** Host-local upstreams the operator trusts. */
  allowLocal: string[];
  upstreamCaFile?: string | undefined;
}

export interface RuntimeOptions {
  driver: SandboxDriver;
  audit: AuditSink;
  proxy?: ProxySettings | undefined;
  /** Names served inside this process for every sandbox (the router's inference.local). */
  internalHosts?: readonly InternalHost[] | undefined;
}

export class Runtime {
  private proxyInstance: EgressProxy | null = null;
  private readonly sandboxes = new Map<string, ManagedSandbox>();

  constructor(private readonly opts: RuntimeOptions) {}

  get driver(): SandboxDriver {
    return this.opts.driver;
  }

  /** The egress proxy, started on first use. */
  async proxy(): Promise<EgressProxy> {
    if (this.proxyInstance) return this.proxyInstance;
    const { EgressProxy } = await import('../proxy/index.js');
    const settings = this.opts.proxy ?? { hosts: {}, allowLocal: [] };
    this.proxyInstance = new EgressProxy({
      audit: this.opts.audit,
      hosts: settings.hosts,
      allowLocal: settings.allowLocal,
      upstreamCaFile: settings.upstreamCaFile,
      tunnelPump: nativeTunnelPump(),
      internalHosts: this.opts.internalHosts,
    });
    return this.proxyInstance;
  }

  get(id: string): ManagedSandbox | undefined {
    return this.sandboxes.get(id);
  }

  list(): ManagedSandbox[] {
    return [...this.sandboxes.values()];
  }

  /**
   * Starts a sandbox through the driver; the returned handle follows it until it ends. Its own
   * findings (a host's replacement of a masked file) go to `audit`, by default the runtime's.
   */
  async start(
    req: DriverStartRequest,
    onSpawned?: (sb: DriverSandbox) => void,
    audit: AuditSink = this.opts.audit,
  ): Promise<{ managed: ManagedSandbox; started: DriverSandbox }> {
    const id = req.spec.id ?? req.spec.name;
    const existing = this.sandboxes.get(id);
    if (
      existing &&
      (existing.state === 'running' || existing.state === 'stopping' || existing.state === 'creating')
    ) {
      throw new RuntimeError('SANDBOX_BUSY', `sandbox ${req.spec.name} is already ${existing.state}`);
    }
    // A sandbox that ended starts again as a new state machine: its old one's listeners are done.
    const managed = new ManagedSandbox(id, req.spec.name, req.ownerUid);
    this.sandboxes.set(id, managed);
    const findings = this.maskFindings(req.spec.name, audit);
    const onMaskCheck = (c: MaskCheck) => findings.checked(c);
    let started: DriverSandbox;
    try {
      started = await managed.run(() => this.opts.driver.start({ ...req, onMaskCheck }), onSpawned);
    } catch (err) {
      findings.flush();
      throw err;
    }
    void started.exited.then(() => findings.flush());
    return { managed, started };
  }

  /**
   * A host's replacement of a masked file, on the record (mask-findings.ts): one per sandbox run,
   * flushed when the sandbox ends.
   */
  private maskFindings(sandbox: string, audit: AuditSink): MaskFindings {
    return new MaskFindings(sandbox, (e) => audit.emit(e));
  }

  /** Takes over a sandbox an earlier process started and that still runs; null if none runs. */
  adopt(
    id: string,
    name: string,
    ownerUid: number,
  ): { managed: ManagedSandbox; started: DriverSandbox } | null {
    const findings = this.maskFindings(name, this.opts.audit);
    const started = this.opts.driver.adopt(id, (c) => findings.checked(c));
    if (!started) return null;
    void started.exited.then(() => findings.flush());
    const managed = new ManagedSandbox(id, name, ownerUid);
    this.sandboxes.set(id, managed);
    managed.adopt(started);
    return { managed, started };
  }

  /** Forgets a sandbox that has ended (its record is the caller's to keep). */
  forget(id: string): void {
    const sb = this.sandboxes.get(id);
    if (sb && (sb.state === 'stopped' || sb.state === 'failed')) this.sandboxes.delete(id);
  }

  async close(): Promise<void> {
    await this.proxyInstance?.close();
    this.proxyInstance = null;
  }
}
