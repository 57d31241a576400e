/**
 * The sandboxes the gateway holds while they run, however they came to run (started by this
 * gateway, sandbox-launcher.ts, or re-adopted from an earlier one, sandbox-adoption.ts): each
 * one's record kept in step with its observed state, its init's events followed
 * (sandbox-events.ts), its stored forwards listening (forwards.ts), and its end dealt with
 * (released, record updated, and, when nobody asked for it, handed to its restart policy).
 */
import type { SandboxProxy } from '../../proxy/index.js';
import type { DriverSandbox } from '../../runtime/driver.js';
import type { ManagedSandbox } from '../../runtime/managed-sandbox.js';
import type { Runtime } from '../../runtime/runtime.js';
import { processStartedAt, UsageMeter, type TreeUsage } from '../../sandbox/processes.js';
import type { SandboxControl } from '../../sandbox/control/control.js';
import type { NetworkAttachment } from '../../sandbox/sandbox.js';
import type { AuditRouter } from '../audit-router.js';
import { forwardEvent, ForwardSet, type ForwardState } from '../sandbox-io/forwards.js';
import type { AgentLogs } from './agent-log.js';
import { followEvents } from './sandbox-events.js';
import type { Run } from './restart-policy.js';
import type { Forward, SandboxRecord, SandboxStore } from '../store/sandbox-store.js';

/** A sandbox the gateway holds while it runs. */
export interface Held {
  id: string;
  sandbox: DriverSandbox;
  control: SandboxControl;
  proxy: SandboxProxy | null;
  network: NetworkAttachment | null;
  forwards: ForwardSet;
  startedAt: number;
  /** Set when the gateway asked it to end: its end is not a reason to restart it. */
  stopping: boolean;
  closeEvents: () => void;
  /** Resolves once its end has been dealt with (released, record updated). */
  done: Promise<void>;
  /** The policy revision it started with (live changes since are the policy service's). */
  policyRev: number;
}

/** A started or re-adopted sandbox, to be held. */
export interface HoldRequest {
  rec: SandboxRecord;
  sandbox: DriverSandbox;
  control: SandboxControl;
  proxy: SandboxProxy | null;
  network: NetworkAttachment | null;
  managed: ManagedSandbox;
  /**
   * Re-adopted (started by an earlier gateway): its log is settled first, and its `network` was
   * made by the gateway, not the driver, so it is closed here when the sandbox ends.
   */
  adopted: boolean;
  /** Ports already listened on for it (SandboxLauncher.reserveForwards). */
  forwards?: ForwardSet | undefined;
}

export interface HeldSandboxesOptions {
  runtime: Runtime;
  store: SandboxStore;
  audit: AuditRouter;
  logs: AgentLogs;
  /** The gateway's own log. */
  log?: ((entry: Record<string, unknown>) => void) | undefined;
  /** The agent ended by itself (not stopped by the gateway): its restart policy's to act on. */
  ended: (id: string, run: Run) => void;
}

export class HeldSandboxes {
  private readonly held = new Map<string, Held>();
  /** The usage readings of the running sandboxes (usage()). */
  private readonly usages = new UsageMeter();

  constructor(private readonly opts: HeldSandboxesOptions) {}

  has(id: string): boolean {
    return this.held.has(id);
  }

  get(id: string): Held | null {
    return this.held.get(id) ?? null;
  }

  all(): Held[] {
    return [...this.held.values()];
  }

  /** When the running sandbox's init started (its run, whichever gateway started it); null if not running. */
  startedAt(id: string): number | null {
    const held = this.held.get(id);
    return held ? processStartedAt(held.sandbox.pid) : null;
  }

  /** CPU so far and resident memory now of a running sandbox's processes (UsageMeter); null if not running. */
  usage(id: string): TreeUsage | null {
    const held = this.held.get(id);
    return held ? this.usages.read(id, held.sandbox.pid) : null;
  }

  /** The state of each forward of a running sandbox by host port; null when it does not run. */
  forwardStates(id: string): ((hostPort: number) => ForwardState | null) | null {
    const held = this.held.get(id);
    return held ? (hostPort) => held.forwards.state(hostPort) : null;
  }

  /** What follows a started or adopted sandbox: state, events, forwards, its end. */
  hold(req: HoldRequest): Held {
    const { rec, sandbox, control, network, managed, adopted } = req;
    const forwards = req.forwards ?? new ForwardSet();
    const events = control.events();
    forwards.attach(control, (f, state) => this.forwardChanged(rec, f, state));
    const entry: Held = {
      id: rec.id,
      sandbox,
      control,
      proxy: req.proxy,
      network,
      forwards,
      startedAt: Date.now(),
      stopping: false,
      closeEvents: () => events.close(),
      done: Promise.resolve(),
      policyRev: rec.spec.policyRev,
    };
    this.held.set(rec.id, entry);
    void followEvents({
      rec,
      control,
      events,
      adopted,
      logs: this.opts.logs,
      audit: this.opts.audit,
      log: this.opts.log,
      ended: sandbox.exited,
    });
    managed.onChange((c) => {
      if (!this.opts.store.get(rec.id)) return;
      this.opts.store.update(rec.id, {
        state: c.to,
        ...(c.exitCode !== undefined ? { exitCode: c.exitCode } : {}),
        ...(c.reason !== undefined ? { reason: c.reason } : {}),
      });
    });
    // What happened before the listener was there (an agent that ended at once) is in `managed`.
    this.opts.store.update(rec.id, {
      state: managed.state,
      exitCode: managed.exitCode,
      reason: managed.reason,
    });
    entry.done = sandbox.exited.then(async (code) => {
      entry.closeEvents();
      await entry.forwards.close();
      if (adopted) await network?.close();
      await sandbox.release();
      if (this.held.get(rec.id) === entry) {
        this.held.delete(rec.id);
        this.usages.forget(rec.id);
      }
      this.opts.runtime.forget(rec.id);
      if (!entry.stopping)
        this.opts.ended(rec.id, { startedAt: entry.startedAt, exitedAt: Date.now(), exitCode: code });
    });
    return entry;
  }

  /**
   * The stored forwards of a sandbox it holds listen, or are kept not listening (a host port
   * someone else took while it was stopped or the gateway down): the sandbox runs either way, and
   * says so (forwardChanged).
   */
  async bindForwards(rec: SandboxRecord, entry: Held): Promise<void> {
    for (const f of this.opts.store.forwards(rec.id)) await entry.forwards.keep(f);
  }

  /** A kept forward stopped or started listening: the sandbox's audit trail and the gateway's log say so. */
  private forwardChanged(rec: SandboxRecord, f: Forward, state: ForwardState): void {
    this.opts.audit.emit(forwardEvent(rec.id, rec.name, f, state));
    this.opts.log?.({
      level: state.listening ? 'info' : 'warn',
      msg: state.listening ? 'forward listening' : 'forward not listening',
      sandbox: rec.name,
      port: f.hostPort,
      ...(state.reason !== null ? { error: state.reason } : {}),
    });
  }

  /**
   * The gateway stops: the sandboxes run on. Their events and forwards end and their proxy
   * sockets close, kept for the next gateway; none of them is held any more.
   */
  async letGo(): Promise<void> {
    for (const entry of this.held.values()) {
      entry.stopping = true; // what follows is this gateway's exit, not the sandbox's
      entry.closeEvents();
      await entry.forwards.close();
      await entry.network?.suspend?.();
    }
    this.held.clear();
  }
}
