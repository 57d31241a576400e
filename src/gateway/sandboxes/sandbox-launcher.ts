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
 * when it starts it re-adopts the ones still running (sandbox-adoption.ts) and listens on their
 * proxy sockets again. Started or re-adopted, a running sandbox is held the same way until it ends
 * (held-sandboxes.ts).
 *
 * Paths a user named (`--workspace`, `--mount`) are checked as that user at every start
 * (sandbox-paths.ts); the sandbox binds them only if they are still the inodes the check saw.
 * Its restart policy, when the agent ends by itself, is restart-scheduler.ts's; what a record
 * starts with (policy settings, proxy attachment, host uid), sandbox-inputs.ts's; its forwards,
 * forwards.ts's.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { BubblewrapSandbox } from '../../runtime/bubblewrap-driver.js';
import type { Runtime } from '../../runtime/runtime.js';
import { specFromSettings } from '../../runtime/sandbox-spec-from-policy.js';
import type { TreeUsage } from '../../sandbox/processes.js';
import type { IdentityRegistry } from '../../sandbox/identity/identity.js';
import { SandboxStartError } from '../../sandbox/launch/launch.js';
import type { NetworkAttachment } from '../../sandbox/sandbox.js';
import type { StateDirs } from '../../sandbox/state-dirs.js';
import { ApiError } from '../api/errors.js';
import type { AuditRouter } from '../audit-router.js';
import { ForwardSet, type ForwardState } from '../sandbox-io/forwards.js';
import { AgentLogs, type LogRotation } from './agent-log.js';
import { HeldSandboxes, type Held } from './held-sandboxes.js';
import { adoptSandbox } from './sandbox-adoption.js';
import { egressOf, policyOf } from './sandbox-inputs.js';
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

export class SandboxLauncher {
  /** The running sandboxes, started or re-adopted. */
  private readonly held: HeldSandboxes;
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
    this.held = new HeldSandboxes({
      runtime: opts.runtime,
      store: opts.store,
      audit: opts.audit,
      logs: this.logs,
      log: opts.log,
      ended: (id, run) => this.ended(id, run),
    });
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
    return this.held.get(id);
  }

  /** When the running sandbox's init started (its run, whichever gateway started it); null if not running. */
  startedAt(id: string): number | null {
    return this.held.startedAt(id);
  }

  /** CPU so far and resident memory now of a running sandbox's processes (UsageMeter); null if not running. */
  usage(id: string): TreeUsage | null {
    return this.held.usage(id);
  }

  /** Every sandbox held now. */
  all(): Held[] {
    return this.held.all();
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
    await this.held.bindForwards(rec, entry);
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
    if (managed.state === 'failed') {
      // The agent never ran (bwrap or the init refused the start, and said why): a start that
      // failed, as one whose checks failed, not a sandbox left `failed` with a create that
      // succeeded. Create keeps nothing of it; a restart counts it as a crash (restart-scheduler.ts).
      await started.exited;
      await started.release();
      this.opts.runtime.forget(rec.id);
      throw new SandboxStartError(managed.reason ?? 'the sandbox did not start');
    }
    const bw = (started as BubblewrapSandbox).started;
    if (!bw.control) throw new ApiError('INTERNAL', `sandbox ${rec.name} has no control socket`);
    return this.held.hold({
      rec,
      sandbox: started,
      control: bw.control,
      proxy: network.proxy(),
      network: attachment,
      managed,
      adopted: false,
      forwards: reserved,
    });
  }

  /**
   * Re-adopts a record's sandbox if it still runs (started by an earlier gateway); returns whether
   * it did (sandbox-adoption.ts).
   */
  adopt(rec: SandboxRecord): Promise<boolean> {
    return adoptSandbox(rec, { ...this.opts, caDir: this.caDir, held: this.held });
  }

  /** The state of each forward of a running sandbox by host port; null when it does not run. */
  forwardStates(id: string): ((hostPort: number) => ForwardState | null) | null {
    return this.held.forwardStates(id);
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
    await this.held.letGo();
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
