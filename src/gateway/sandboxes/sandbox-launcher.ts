/**
 * Runs the gateway's sandboxes on its runtime: turns a stored record (spec, policy revision,
 * sealed credentials) into a started sandbox attached to the shared proxy, keeps the record's
 * observed state in step with the sandbox's, and follows it until it ends (restarting it as its
 * policy says).
 *
 * Sandboxes outlive the gateway: each is started detached, with a control socket (exec, port
 * forwards, events) and its output written by its own init to `<state>/logs/<id>.log`, rotated
 * when the init asks (agent-log.ts). When the
 * gateway stops it lets them be (its proxy sockets close; their relays fail until it is back);
 * when it starts it re-adopts the ones still running (runtime.adopt: by the run record's pid and
 * start time) and listens on their proxy sockets again.
 *
 * Paths a user named (`--workspace`, `--mount`) are checked as that user at every start
 * (sandbox-paths.ts); the sandbox binds them only if they are still the inodes the check saw.
 * Its restart policy, when the agent ends by itself, is restart-scheduler.ts's; what a record
 * starts with (policy settings, proxy attachment, host uid), sandbox-inputs.ts's; its forwards,
 * forwards.ts's.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { lifecycle } from '../../audit/index.js';
import type { SandboxProxy } from '../../proxy/index.js';
import type { AdoptedSandbox } from '../../runtime/adopted-sandbox.js';
import type { BubblewrapSandbox } from '../../runtime/bubblewrap-driver.js';
import type { DriverSandbox } from '../../runtime/driver.js';
import type { ManagedSandbox } from '../../runtime/managed-sandbox.js';
import type { Runtime } from '../../runtime/runtime.js';
import { specFromSettings } from '../../runtime/sandbox-spec-from-policy.js';
import { SandboxCgroup } from '../../sandbox/cgroup/cgroup.js';
import { processStartedAt, UsageMeter, type TreeUsage } from '../../sandbox/processes.js';
import { SandboxControl } from '../../sandbox/control/control.js';
import type { IdentityRegistry } from '../../sandbox/identity/identity.js';
import { SandboxStartError } from '../../sandbox/launch/launch.js';
import type { NetworkAttachment } from '../../sandbox/sandbox.js';
import type { StateDirs } from '../../sandbox/state-dirs.js';
import { ApiError } from '../api/errors.js';
import type { AuditRouter } from '../audit-router.js';
import { forwardEvent, ForwardSet, type ForwardState } from '../sandbox-io/forwards.js';
import { AgentLogs, type LogRotation } from './agent-log.js';
import { egressOf, identityOf, policyOf } from './sandbox-inputs.js';
import { followEvents } from './sandbox-events.js';
import type { RestartSettings, Run } from './restart-policy.js';
import { RestartScheduler } from './restart-scheduler.js';
import { checkedPaths, handBackWorkspace } from './sandbox-paths.js';
import type { Forward, SandboxRecord, SandboxStore } from '../store/sandbox-store.js';
import type { SecretBox } from '../store/secret-box.js';

export interface SandboxLauncherOptions {
  runtime: Runtime;
  store: SandboxStore;
  audit: AuditRouter;
  secrets: SecretBox;
  dirs: StateDirs;
  identities: IdentityRegistry | null;
  /** True for a rootless gateway: every sandbox is the gateway's user, no path checks. */
  rootless: boolean;
  restart?: RestartSettings | undefined;
  /** Size and number of each sandbox's agent log files (default 16 MiB × 2: agent-log.ts). */
  logRotation?: LogRotation | undefined;
  /** The gateway's own log. */
  log?: (entry: Record<string, unknown>) => void;
}

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

export class SandboxLauncher {
  private readonly held = new Map<string, Held>();
  /** The usage readings of the running sandboxes (usage()). */
  private readonly usages = new UsageMeter();
  /** Its restart policy, for each sandbox whose agent ends by itself. */
  private readonly restarts: RestartScheduler;
  /** The agents' output logs, rotated at their inits' request. */
  readonly logs: AgentLogs;

  constructor(private readonly opts: SandboxLauncherOptions) {
    this.restarts = new RestartScheduler({
      store: opts.store,
      audit: opts.audit,
      restart: opts.restart,
      log: opts.log,
      start: (rec) => this.start(rec),
      isRunning: (id) => this.held.has(id),
    });
    mkdirSync(this.caDir, { recursive: true, mode: 0o700 });
    this.logs = new AgentLogs(join(this.opts.dirs.state, 'logs'), opts.logRotation);
  }

  private get caDir(): string {
    return join(this.opts.dirs.state, 'ca');
  }

  logPath(id: string): string {
    return this.logs.path(id);
  }

  isRunning(id: string): boolean {
    return this.held.has(id);
  }

  /** The running sandbox of a record (exec, forwards, policy changes); null when it is not running. */
  get(id: string): Held | null {
    return this.held.get(id) ?? null;
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

  /** Every sandbox held now. */
  all(): Held[] {
    return [...this.held.values()];
  }

  /**
   * Listens on the host ports of a sandbox being created, before anything of it is stored: a port
   * someone else holds is refused (ForwardBindError) and nothing is kept. The set is the caller's
   * to hand to start(), or to close.
   */
  async reserveForwards(forwards: readonly Forward[]): Promise<ForwardSet> {
    const set = new ForwardSet();
    try {
      for (const f of forwards) await set.add(f);
    } catch (err) {
      await set.close();
      throw err;
    }
    return set;
  }

  /**
   * Starts a record's sandbox. Its stored forwards listen before this returns, or are shown as
   * not listening and tried again (forwards.ts); `reserved` are ports already listened on for it
   * (reserveForwards), closed if it does not start. A start the sandbox layer refuses (a mount
   * source gone, bwrap failing) is SANDBOX_START_FAILED with its reason, not an internal error.
   */
  async start(rec: SandboxRecord, reserved?: ForwardSet): Promise<void> {
    let entry: Held;
    try {
      entry = await this.launch(rec, reserved);
    } catch (err) {
      await reserved?.close();
      throw err instanceof SandboxStartError ? new ApiError('SANDBOX_START_FAILED', err.message) : err;
    }
    await this.bindForwards(rec, entry);
  }

  private async launch(rec: SandboxRecord, reserved: ForwardSet | undefined): Promise<Held> {
    if (this.held.has(rec.id)) throw new ApiError('SANDBOX_BUSY', `sandbox ${rec.name} is already running`);
    this.restarts.cancel(rec.id);
    const { policy, settings, engine } = await policyOf(this.opts.store, rec);
    const { workspace, mounts, expected } = await checkedPaths(rec, this.opts);
    const spec = specFromSettings(settings, {
      name: rec.name,
      workspace,
      env: rec.spec.env,
      mounts,
      command: rec.spec.command,
    });
    spec.id = rec.id;
    let attachment: NetworkAttachment | null = null;
    const network = egressOf(
      this.opts,
      this.caDir,
      rec,
      engine.compilePolicy(policy),
      settings.limits,
      false,
    );
    const { managed, started } = await this.opts.runtime.start({
      spec,
      ownerUid: rec.ownerUid,
      network: async (name, identity) => (attachment = await network.provider(name, identity)),
      removeWorkspace: false,
      ephemeral: false,
      bestEffortLimits: false,
      stdio: 'pipe',
      expectedInodes: expected,
      // The caller's own files in a workspace they gave go to the sandbox, nobody else's.
      handOverFrom: this.opts.rootless || rec.ownerUid === 0 ? undefined : rec.ownerUid,
      control: true,
      logFile: this.logPath(rec.id),
      logLimitBytes: this.logs.rotation.maxFileBytes,
      detached: true,
    });
    const bw = (started as BubblewrapSandbox).started;
    if (!bw.control) throw new ApiError('INTERNAL', `sandbox ${rec.name} has no control socket`);
    return this.hold(rec, started, bw.control, network.proxy(), attachment, managed, false, reserved);
  }

  /**
   * Re-adopts a record's sandbox if it still runs (started by an earlier gateway); returns whether
   * it did. Its proxy socket is served again in the directory its relay knows.
   */
  async adopt(rec: SandboxRecord): Promise<boolean> {
    const adopted = this.opts.runtime.adopt(rec.id, rec.name, rec.ownerUid);
    if (!adopted) return false;
    const sb = adopted.started as AdoptedSandbox;
    // Its attachment to the proxy is made here, not by the driver (which releases a started
    // sandbox's with it): closed here when it ends, or the proxy keeps it ("already attached").
    let attachment: NetworkAttachment | null = null;
    try {
      const { policy, settings, engine } = await policyOf(this.opts.store, rec);
      const network = egressOf(
        this.opts,
        this.caDir,
        rec,
        engine.compilePolicy(policy),
        settings.limits,
        true,
      );
      attachment = await network.provider(rec.id, identityOf(this.opts, rec));
      const cgroup = sb.record.cgroupKey ? SandboxCgroup.existing(sb.record.cgroupKey) : null;
      attachment.started(sb.pid, cgroup);
      const control = new SandboxControl(join(sb.controlDir, 'control.sock'));
      const entry = this.hold(rec, sb, control, network.proxy(), attachment, adopted.managed, true);
      await this.bindForwards(rec, entry);
    } catch (err) {
      // Running, but not ours to serve: stop it rather than leave it without its proxy.
      this.opts.log?.({
        level: 'warn',
        msg: 'cannot re-adopt a sandbox',
        sandbox: rec.name,
        error: (err as Error).message,
      });
      sb.kill();
      await sb.exited;
      await attachment?.close();
      await sb.release();
      return false;
    }
    this.opts.audit.emit(
      lifecycle({
        sandbox: rec.id,
        activity: 'update',
        message: `sandbox ${rec.name} re-adopted: its gateway was lost (stopped or killed) and another took it over`,
        details: { gateway_lost: true, pid: sb.pid },
      }),
    );
    return true;
  }

  /** What follows a started or adopted sandbox: state, events, forwards, its end. */
  private hold(
    rec: SandboxRecord,
    sandbox: DriverSandbox,
    control: SandboxControl,
    proxy: SandboxProxy | null,
    network: NetworkAttachment | null,
    managed: ManagedSandbox,
    /** The launcher made `network` (an adopted sandbox): it closes it when the sandbox ends. */
    ownsNetwork = false,
    /** Ports already listened on for it (reserveForwards). */
    forwards = new ForwardSet(),
  ): Held {
    const events = control.events();
    forwards.attach(control, (f, state) => this.forwardChanged(rec, f, state));
    const entry: Held = {
      id: rec.id,
      sandbox,
      control,
      proxy,
      network,
      forwards,
      startedAt: Date.now(),
      stopping: false,
      closeEvents: () => events.close(),
      done: Promise.resolve(),
      policyRev: rec.spec.policyRev,
    };
    this.held.set(rec.id, entry);
    // ownsNetwork: an adopted sandbox, whose log is settled first.
    void followEvents({
      rec,
      control,
      events,
      adopted: ownsNetwork,
      logs: this.logs,
      audit: this.opts.audit,
      log: this.opts.log,
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
      if (ownsNetwork) await network?.close();
      await sandbox.release();
      if (this.held.get(rec.id) === entry) {
        this.held.delete(rec.id);
        this.usages.forget(rec.id);
      }
      this.opts.runtime.forget(rec.id);
      if (!entry.stopping)
        this.ended(rec.id, { startedAt: entry.startedAt, exitedAt: Date.now(), exitCode: code });
    });
    return entry;
  }

  /**
   * The stored forwards of a sandbox it holds listen, or are kept not listening (a host port
   * someone else took while it was stopped or the gateway down): the sandbox runs either way, and
   * says so (forwardChanged).
   */
  private async bindForwards(rec: SandboxRecord, entry: Held): Promise<void> {
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

  /** The state of each forward of a running sandbox by host port; null when it does not run. */
  forwardStates(id: string): ((hostPort: number) => ForwardState | null) | null {
    const held = this.held.get(id);
    return held ? (hostPort) => held.forwards.state(hostPort) : null;
  }

  /** The agent ended by itself: its restart policy says what next (restart-scheduler.ts). */
  ended(id: string, run: Run): void {
    this.restarts.ended(id, run);
  }

  /**
   * A start the gateway made by itself (not a caller's) failed: its restart policy treats it as a
   * crash (restart-scheduler.ts).
   */
  startFailed(id: string, startedAt: number, err: unknown): void {
    this.restarts.startFailed(id, startedAt, err);
  }

  /** When its restart waiting for its backoff is due (ms since the epoch); null: none waits. */
  restartAt(id: string): number | null {
    return this.restarts.restartAt(id);
  }

  /** Forgets the restart history of a sandbox (started by hand: a fresh count). */
  resetRuns(id: string): void {
    this.restarts.resetRuns(id);
  }

  /** Stops a running sandbox (SIGTERM, then everything killed after `graceMs`); no-op if stopped. */
  async stop(id: string, graceMs = 10_000): Promise<void> {
    // A restart waiting for its backoff is called off, and its "restarting in …" with it.
    if (this.restarts.cancel(id) && this.opts.store.get(id)) this.opts.store.update(id, { reason: null });
    const entry = this.held.get(id);
    const managed = this.opts.runtime.get(id);
    if (!entry || !managed) return;
    entry.stopping = true;
    await managed.stop(graceMs);
    await entry.done; // its end releases it
  }

  /**
   * The gateway stops: the sandboxes run on. Pending restarts are dropped (the next gateway decides
   * again), events and forwards end, and the proxy sockets close, kept for the next gateway.
   */
  async letGo(): Promise<void> {
    this.restarts.cancelAll();
    for (const entry of this.held.values()) {
      entry.stopping = true; // what follows is this gateway's exit, not the sandbox's
      entry.closeEvents();
      await entry.forwards.close();
      await entry.network?.suspend?.();
    }
    this.held.clear();
  }

  /** Forgets everything the launcher holds of a record (it is being deleted). */
  async forget(rec: SandboxRecord): Promise<void> {
    await this.stop(rec.id, 0);
    this.restarts.forget(rec.id);
  }

  /**
   * A workspace kept past its sandbox, handed back to the sandbox's owner (sandbox-paths.ts).
   * Returns its path.
   */
  handBack(rec: SandboxRecord, ownWorkspace: boolean): Promise<string> {
    const sandboxUid = this.opts.identities?.lookup({ state: this.opts.dirs.state, name: rec.id }) ?? null;
    return handBackWorkspace(rec, ownWorkspace, this.opts.rootless, sandboxUid);
  }
}
