/**
 * One sandbox's side of the egress proxy: its Unix socket, the policy generation in force, its
 * budgets, counters and open raw tunnels (EgressProxy in egress-proxy.ts attaches one per sandbox).
 *
 * Threat: one sandbox reaches another's socket or policy, or keeps a permission a reload removed.
 * Assumptions:
 * - the socket is created mode 0600 (chowned to `socketOwner` when given) inside a directory the
 *   launcher keeps private; only the sandbox's relay can reach it;
 * - a policy swap (`setGeneration`) is one assignment: each decision reads the current generation,
 *   so a connection or request is judged by exactly one generation; raw tunnels, which no later
 *   request will re-judge, are re-judged at the swap and closed when no longer allowed.
 */
import { chmodSync, chownSync, lstatSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import { type AuditSink, configChange, lifecycle } from '../audit/index.js';
import { type AddressGuard, isHostLocalName } from './net/address-guard.js';
import type { CallerResolver } from './identity/caller-identity.js';
import { handleConnection } from './session/connection.js';
import type { InternalHosts } from './session/internal-host.js';
import type { PolicyGeneration } from '../policy/index.js';
import { proxyPolicyOf } from './policy-adapter.js';
import {
  type BudgetLimits,
  type BudgetStats,
  type ProxyBudgets,
  SandboxBudget,
  budgetsFor,
} from './budget/sandbox-budget.js';
import type { ProxyPolicy } from './policy-port.js';
import { ProxyAudit } from './proxy-audit.js';
import type { OpenTunnel, PinnedGeneration, SandboxContext } from './sandbox-context.js';
import type { TlsAuthority } from './tls/tls-authority.js';
import type { UpstreamTrust } from './net/upstream.js';
import { UpstreamSessions } from './net/upstream-sessions.js';
import type { HeldBy } from './session/responses.js';

export interface AttachOptions {
  name: string;
  /** A `carapace run` (its policy a file) or a gateway's sandbox (revisions, proposals): what a denial's hint names. */
  heldBy: HeldBy;
  socketPath: string;
  socketOwner?: { uid: number; gid: number } | undefined;
  /** The compiled network policy (`compilePolicy(policy)` from src/policy). */
  generation: PolicyGeneration;
  callerResolver: CallerResolver;
  /** Credential values by name (the sandbox sees only `carapace:cred:NAME`). */
  credentials?: ReadonlyMap<string, string> | undefined;
  authority: TlsAuthority;
  /** Simultaneous connections from this sandbox; more are closed at once (default: budgets). */
  maxConnections?: number | undefined;
  /** The sandbox's limits (`resolveLimits` of src/policy): the budgets' defaults derive from them. */
  limits?: BudgetLimits | undefined;
  /** Budgets set explicitly, field by field (sandbox-budget.ts; docs/proxy.md, "Budgets"). */
  budgets?: Partial<ProxyBudgets> | undefined;
}

/** What the audit event of a policy swap says about the change that made it (setGeneration). */
export interface GenerationChange {
  /** Who and what, for the event's message: "policy revision 3 by uid 1000". */
  what: string;
  /** Added to the event's details (author, revisions, sections). */
  details?: Record<string, unknown>;
}

/** What the proxy did for one sandbox since it attached: read for the gateway's /metrics. */
export interface ProxyCounters {
  /** Connections accepted from the sandbox. */
  connections: number;
  /** Connections refused (4001 refusals: policy, SSRF guard, identity, the connection limit). */
  deniedConnections: number;
  /** Requests refused inside inspected connections (4002 refusals). */
  deniedRequests: number;
  /**
   * Bytes from and to the sandbox's side (what its relay carried, the relay's header included):
   * what this process read and wrote, and what carapace-pump delivered for the bulk tunnels handed
   * to it, as the pump reports it (every 4 MiB and at its end).
   */
  bytesFromSandbox: number;
  bytesToSandbox: number;
}

export class ProxyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ProxyError';
  }
}

/** What every SandboxProxy of one EgressProxy shares (its operator settings and hooks). */
export interface Shared {
  audit: AuditSink;
  guard: AddressGuard;
  upstreamTrust: UpstreamTrust;
  onError: ((err: unknown, sandbox: string) => void) | undefined;
  onDetach: () => void;
  tunnelPump: string | null;
  internal: InternalHosts;
}

export class SandboxProxy {
  readonly name: string;
  readonly socketPath: string;
  private pinned: PinnedGeneration;
  private secrets: ReadonlyMap<string, string>;
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();
  private readonly tunnels = new Set<OpenTunnel>();
  /** The connection limit was reached and has not been left well behind since (see 'drop'). */
  private saturated = false;
  private readonly audit: ProxyAudit;
  private readonly context: SandboxContext;
  private readonly budget: SandboxBudget;
  /** Closed connections' bytes, and the other counters (open sockets' bytes are added when read). */
  private readonly totals: ProxyCounters = {
    connections: 0,
    deniedConnections: 0,
    deniedRequests: 0,
    bytesFromSandbox: 0,
    bytesToSandbox: 0,
  };
  private pumpHome: ((pid: number) => void) | null = null;

  constructor(
    private readonly options: AttachOptions,
    private readonly shared: Shared,
  ) {
    this.name = options.name;
    this.socketPath = options.socketPath;
    this.pinned = { policy: proxyPolicyOf(options.generation), generation: 1, source: options.generation };
    this.secrets = options.credentials ?? new Map();
    this.audit = new ProxyAudit(shared.audit, options.name, this.totals);
    this.budget = new SandboxBudget(
      budgetsFor(options.limits, {
        ...options.budgets,
        maxConnections: options.maxConnections ?? options.budgets?.maxConnections,
      }),
    );
    this.context = {
      name: options.name,
      heldBy: options.heldBy,
      audit: this.audit,
      guard: shared.guard,
      get upstreamTls() {
        return shared.upstreamTrust.context;
      },
      // Never shared between sandboxes (upstream-sessions.ts).
      upstreamSessions: new UpstreamSessions(),
      authority: options.authority,
      callerResolver: options.callerResolver,
      current: () => this.pinned,
      internalHost: (host) => (shared.internal.size === 0 ? null : shared.internal.lookup(host)),
      credentials: () => this.secrets,
      internalError: (err) => shared.onError?.(err, options.name),
      tunnelPump: shared.tunnelPump,
      adoptPump: (pid) => this.pumpHome?.(pid),
      budget: this.budget,
      countPumped: (fromSandbox, toSandbox) => {
        this.totals.bytesFromSandbox += fromSandbox;
        this.totals.bytesToSandbox += toSandbox;
      },
      track: (t) => {
        this.tunnels.add(t);
        // A reload between this tunnel's CONNECT decision and now (while its ClientHello was awaited,
        // say) did not see it: judge it by the generation in force. The same generation would give
        // the same answer.
        if (t.generation !== this.pinned.generation) {
          const reason = this.stillAllowed(t, this.pinned.policy);
          if (reason !== null) queueMicrotask(() => t.close(`policy reload: ${reason}`));
        }
        return () => this.tunnels.delete(t);
      },
    };
    const limit = this.budget.budgets.maxConnections;
    this.server = net.createServer({ allowHalfOpen: true }, (socket) => {
      this.sockets.add(socket);
      this.totals.connections++;
      socket.once('close', () => {
        this.sockets.delete(socket);
        this.totals.bytesFromSandbox += socket.bytesRead;
        this.totals.bytesToSandbox += socket.bytesWritten;
        // Well below the limit again: the next time it is reached is worth another event.
        if (this.sockets.size <= Math.floor(limit * 0.9)) this.saturated = false;
      });
      void handleConnection(this.context, socket);
    });
    // One sandbox opening connections without end must not exhaust the proxy's descriptors for all.
    // Node closes every connection beyond the limit at once ('drop'). One event records each time
    // the limit is reached, not each connection dropped: a flood would otherwise turn into as many
    // audit lines as the agent cares to make.
    this.server.maxConnections = limit;
    this.server.on('drop', () => {
      if (this.saturated) return;
      this.saturated = true;
      this.audit.connect({
        disposition: 'blocked',
        host: '(unknown)',
        port: 0,
        caller: {},
        reason: `connection limit reached: ${limit} connections open; new ones are closed until some end`,
        generation: this.pinned.generation,
      });
    });
  }

  /**
   * Where this sandbox's tunnel pumps go once they run: the launcher passes a function that moves a
   * pid into the sandbox's cgroups, so that bulk transfers count against the sandbox's own cpu,
   * memory and pids limits, not the host's. Without one, pumps stay in the proxy's cgroup.
   */
  adoptPumpsWith(home: ((pid: number) => void) | null): void {
    this.pumpHome = home;
  }

  /** @internal Create the socket file and start accepting. */
  async listen(): Promise<void> {
    removeStaleSocket(this.socketPath);
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.socketPath, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    chmodSync(this.socketPath, 0o600);
    if (this.options.socketOwner)
      chownSync(this.socketPath, this.options.socketOwner.uid, this.options.socketOwner.gid);
    const b = this.budget.budgets;
    this.shared.audit.emit(
      lifecycle({
        sandbox: this.name,
        activity: 'update',
        message: `egress proxy attached: ${b.maxConnections} connections, ${Math.round(b.bufferBytes / 1024)} KiB buffered, ${Number.isFinite(b.workMicrosPerSecond) ? `${Math.round(b.workMicrosPerSecond / 1000)} ms/s of proxy work` : 'proxy work not limited (no cpu limit)'}`,
        details: {
          proxy_budgets: {
            buffer_bytes: b.bufferBytes,
            max_connections: b.maxConnections,
            // null: not limited (the sandbox has no cpu limit)
            work_us_per_second: Number.isFinite(b.workMicrosPerSecond) ? b.workMicrosPerSecond : null,
            work_burst_us: Number.isFinite(b.workBurstMicros) ? b.workBurstMicros : null,
          },
        },
      }),
    );
  }

  /** The generation number now in force (1 at attach). */
  get generation(): number {
    return this.pinned.generation;
  }

  /** Raw tunnels open right now. */
  get openTunnels(): number {
    return this.tunnels.size;
  }

  /** The sandbox's budgets, as derived from its limits and options. */
  get budgets(): ProxyBudgets {
    return this.budget.budgets;
  }

  /** What the sandbox holds and spends in the proxy now (sandbox-budget.ts). */
  get budgetStats(): BudgetStats {
    return this.budget.stats;
  }

  /** Connections open right now. */
  get openConnections(): number {
    return this.sockets.size;
  }

  /** What the proxy did for this sandbox since it attached (a snapshot). */
  get counters(): ProxyCounters {
    const now = { ...this.totals };
    for (const s of this.sockets) {
      now.bytesFromSandbox += s.bytesRead;
      now.bytesToSandbox += s.bytesWritten;
    }
    return now;
  }

  /**
   * Swap in a new policy generation. New connections and the next request on every kept-alive
   * connection use it at once; open raw tunnels it no longer allows are closed (4001 Close).
   * Returns how many tunnels were closed. `change` says who made it, for the audit event.
   */
  setGeneration(next: PolicyGeneration, change?: GenerationChange): number {
    const policy = proxyPolicyOf(next);
    this.pinned = { policy, generation: this.pinned.generation + 1, source: next };
    let closed = 0;
    for (const t of [...this.tunnels]) {
      const reason = this.stillAllowed(t, policy);
      if (reason !== null) {
        closed++;
        t.close(`policy reload: ${reason}`);
      }
    }
    this.shared.audit.emit(
      configChange({
        sandbox: this.name,
        accepted: true,
        message: `${change ? `${change.what}: ` : ''}network policy generation ${this.pinned.generation} in force`,
        generation: this.pinned.generation,
        details: { ...change?.details, closed_tunnels: closed },
      }),
    );
    return closed;
  }

  /** null when the tunnel may stay open under `policy`, else why not. */
  private stillAllowed(t: OpenTunnel, policy: ProxyPolicy): string | null {
    const v = policy.decideConnect({
      host: t.host,
      port: t.port,
      binary: t.caller.binary,
      ancestors: t.caller.ancestors,
    });
    if (!v.allowed) return v.reason;
    if (v.endpoint?.inspect && !t.inspected) return 'the endpoint now requires inspection';
    return this.shared.guard.checkAddress(
      t.address,
      t.port,
      v.endpoint?.allowedIps ?? [],
      (v.endpoint?.hostLocal ?? false) && isHostLocalName(t.host),
    );
  }

  /** Replace the credential values (names bound by the policy are unchanged). */
  setCredentials(credentials: ReadonlyMap<string, string>): void {
    this.secrets = credentials;
  }

  /** Stop accepting, close every connection of this sandbox and remove the socket file. */
  async detach(): Promise<void> {
    const closing = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const s of this.sockets) s.destroy();
    for (const t of [...this.tunnels]) t.close('sandbox detached');
    await closing;
    this.budget.close();
    removeStaleSocket(this.socketPath);
    this.shared.onDetach();
  }
}

function removeStaleSocket(path: string): void {
  try {
    const st = lstatSync(path);
    if (!st.isSocket()) throw new ProxyError(`${path} exists and is not a socket`);
    unlinkSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}
