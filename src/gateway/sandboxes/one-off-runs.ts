/**
 * `carapace run` through a running gateway: one-off sandboxes started ahead of the command they
 * will run, so that a run pays Node's start-up and one socket round trip instead of a sandbox's
 * whole set-up (docs/gateway.md, "carapace run and the gateway"; docs/benchmarks.md, `startup`).
 *
 * Each owner (the caller's uid, from the kernel) has at most one sandbox waiting: the built-in
 * default policy, a temporary workspace, a fresh host uid, no network — what a one-off run of the
 * default policy gets — whose agent is a `sleep` holding the sandbox open. A run takes it (or,
 * with none waiting, has one started for it), runs its command there as an exec (the agent's own
 * confinement, kept by the init), and when the exec's connection ends the sandbox is killed and
 * removed, as a one-off run's is; another is started for the owner's next run. A waiting sandbox
 * nobody takes is stopped after `idleMs`. Every run's events (its sandbox started, the command,
 * its end) go to one audit file, `<state>/audit/runs.jsonl`.
 *
 * Security: a sandbox serves exactly one run of the owner it was made for and is never reused, so
 * nothing one command left (files, processes, a planted /tmp) reaches another. They are not kept
 * in the store: they die with the gateway (bwrap's --die-with-parent) and its next start sweeps
 * what they left, as it does for a one-off `carapace run` whose process died. What a run does is
 * charged to its sandbox (its cgroup and uid), not to the gateway.
 *
 * Quotas: a run's sandbox counts against its owner's quotas while the run lasts, in the account
 * their created sandboxes count in (quotas.ts): a user at their limit is refused a run
 * (QUOTA_EXCEEDED), and a run's sandbox gets the memory limit a created one of the default policy
 * would (`--default-memory`, at most what the user has left). The one waiting is the gateway's,
 * not counted: it is started only for a user the quotas would let run, and a run takes it only if
 * its memory limit is the one the run gets now (else another is started).
 */
import { lifecycle, type AuditSink } from '../../audit/index.js';
import { BubblewrapSandbox } from '../../runtime/bubblewrap-driver.js';
import { defaultPolicyPath, skippedLimitsWarning } from '../../runtime/one-off-run.js';
import { loadSandboxSettings } from '../../runtime/policy-settings.js';
import type { Runtime } from '../../runtime/runtime.js';
import { specFromSettings } from '../../runtime/sandbox-spec-from-policy.js';
import { newSandboxName, sandboxPaths } from '../../sandbox/sandbox.js';
import type { StateDirs } from '../../sandbox/state-dirs.js';
import { ApiError } from '../api/errors.js';
import type { Caller } from '../api/router.js';
import type { UserQuotas } from './quotas.js';

/** The audit trail's file for every run's events: `<state>/audit/runs.jsonl` (ids are `sb-…`). */
export const RUNS_AUDIT_ID = 'runs';
/** What holds a waiting sandbox open until a run takes it. */
const HOLD_COMMAND = ['sleep', 'infinity'];
/** A waiting sandbox nobody takes is stopped after this long. */
const IDLE_MS = 10 * 60_000;
/** Runs of one owner at a time through the gateway; beyond, `carapace run` runs in its own process. */
export const MAX_RUNS_PER_OWNER = 16;

/** A sandbox given to one run: its name, its control socket, and how to end it. */
export interface RunSandbox {
  name: string;
  controlPath: string;
  /** Kills the sandbox and removes what it had on the host. Safe to call twice. */
  end(): void;
  /** A line for the run's stderr before its command's output (limits without a cgroup), or null. */
  notice: string | null;
}

interface Started extends RunSandbox {
  /** False once it ended, by end() or on its own (killed from outside): it can serve no run. */
  alive(): boolean;
  /** Its memory limit (none: an admin's). */
  memoryBytes: number | null;
}

interface Waiting {
  ready: Promise<Started | null>;
  timer?: NodeJS.Timeout;
}

export interface OneOffRunsOptions {
  runtime: Runtime;
  dirs: StateDirs;
  audit: AuditSink;
  /** The per-user account a run's sandbox counts in, as a created one does. */
  quotas: UserQuotas;
  log: (entry: Record<string, unknown>) => void;
  idleMs?: number;
}

export class OneOffRuns {
  private readonly waiting = new Map<number, Waiting>();
  /** Runs per owner, taken or being started. */
  private readonly running = new Map<number, number>();
  /** Every sandbox of ours alive or being cleaned up: ends it, resolves once it is removed. */
  private readonly ends = new Set<() => Promise<void>>();
  private readonly starting = new Set<Promise<void>>();
  private closed = false;

  constructor(private readonly opts: OneOffRunsOptions) {}

  /**
   * A sandbox for one run of the caller's: the one waiting, else one started now. Refused
   * (QUOTA_EXCEEDED) past MAX_RUNS_PER_OWNER at once or past the caller's quotas, which it counts
   * against until it ends; a start that fails throws its own error.
   */
  async take(caller: Caller): Promise<RunSandbox> {
    const owner = caller.uid;
    if (this.closed) throw new ApiError('SANDBOX_NOT_RUNNING', 'the gateway is stopping');
    const count = this.running.get(owner) ?? 0;
    if (count >= MAX_RUNS_PER_OWNER)
      throw new ApiError(
        'QUOTA_EXCEEDED',
        `${MAX_RUNS_PER_OWNER} runs of uid ${owner} are already running through the gateway`,
      );
    // Checked and counted now, before anything is awaited (quotas.ts).
    const memoryBytes = this.opts.quotas.defaultMemory(caller);
    const release = this.opts.quotas.hold(caller, memoryBytes);
    this.running.set(owner, count + 1);
    const done = () => {
      release();
      const n = (this.running.get(owner) ?? 1) - 1;
      if (n > 0) this.running.set(owner, n);
      else this.running.delete(owner);
    };
    let sb: Started | null = null;
    try {
      const w = this.waiting.get(owner);
      this.waiting.delete(owner);
      if (w?.timer) clearTimeout(w.timer);
      sb = w ? await w.ready : null;
      // One made for another limit (the user's sandboxes changed since) is not this run's.
      if (sb !== null && sb.memoryBytes !== memoryBytes) sb.end();
      if (sb === null || !sb.alive()) sb = await this.start(owner, memoryBytes);
    } catch (err) {
      done();
      throw err;
    }
    const taken = sb;
    let over = false;
    return {
      name: taken.name,
      controlPath: taken.controlPath,
      notice: taken.notice,
      end: () => {
        if (over) return;
        over = true;
        done();
        taken.end();
        // The next one once this run is over, not while it runs: its start would compete with
        // the run for the gateway's CPU (a run that comes sooner waits for it, or starts its own).
        this.prepare(caller);
      },
    };
  }

  /** Starts the caller's next sandbox, to wait for their next run, if their quotas would allow it. */
  private prepare(caller: Caller): void {
    const owner = caller.uid;
    if (this.closed || this.waiting.has(owner)) return;
    const memoryBytes = this.opts.quotas.defaultMemory(caller);
    try {
      this.opts.quotas.check(caller, memoryBytes ?? undefined);
    } catch {
      return; // its run would be refused: nothing to start
    }
    const w: Waiting = {
      ready: this.start(owner, memoryBytes).catch((err: unknown) => {
        this.opts.log({
          level: 'warn',
          msg: 'a sandbox for the next carapace run did not start',
          owner,
          error: err instanceof Error ? err.message : String(err),
        });
        return null;
      }),
    };
    this.waiting.set(owner, w);
    void w.ready.then((sb) => {
      if (this.waiting.get(owner) !== w) return;
      if (sb === null) {
        this.waiting.delete(owner);
        return;
      }
      w.timer = setTimeout(() => {
        if (this.waiting.get(owner) !== w) return;
        this.waiting.delete(owner);
        sb.end();
      }, this.opts.idleMs ?? IDLE_MS);
      w.timer.unref();
    });
  }

  /** Starts one, followed by close() until it is ready (or refused). */
  private start(owner: number, memoryBytes: number | null): Promise<Started> {
    const starting = this.startOne(owner, memoryBytes);
    const settled = starting.then(
      () => {},
      () => {},
    );
    this.starting.add(settled);
    void settled.then(() => this.starting.delete(settled));
    return starting;
  }

  private async startOne(owner: number, memoryBytes: number | null): Promise<Started> {
    const { dirs, runtime } = this.opts;
    const name = newSandboxName();
    const settings = await loadSandboxSettings(defaultPolicyPath(), dirs.state);
    // The default policy sets none: a user's run gets the gateway's default, as a created sandbox.
    if (settings.limits.memoryBytes === undefined && memoryBytes !== null)
      settings.limits.memoryBytes = memoryBytes;
    const spec = specFromSettings(settings, {
      name,
      workspace: sandboxPaths(dirs, name).defaultWorkspace,
      env: {},
      mounts: [],
      command: HOLD_COMMAND,
    });
    const { started } = await runtime.start(
      {
        spec,
        ownerUid: owner,
        ephemeral: true,
        removeWorkspace: true,
        // As a one-off run of the default policy: where no cgroup can be had, its rlimits hold.
        bestEffortLimits: true,
        stdio: 'pipe',
        control: true,
      },
      undefined,
      // Its findings too (a host's /etc/passwd replaced while it runs): a file of its own per
      // sandbox would pile up, each held open by the gateway for good.
      this.opts.audit,
    );
    const sb = started as BubblewrapSandbox;
    let alive = true;
    let cleaned: Promise<void> | null = null;
    const end = () => {
      if (cleaned) return;
      alive = false;
      sb.kill();
      this.opts.audit.emit(
        lifecycle({ sandbox: name, activity: 'stop', message: `sandbox ${name} ended: its run is over` }),
      );
      cleaned = sb.exited
        .then(() => sb.release())
        .then(() => runtime.forget(sb.id))
        .catch((err: unknown) =>
          this.opts.log({
            level: 'warn',
            msg: 'a carapace run sandbox was not cleaned up',
            sandbox: name,
            error: err instanceof Error ? err.message : String(err),
          }),
        )
        .finally(() => this.ends.delete(cleanUp));
    };
    const cleanUp = () => {
      end();
      return cleaned!;
    };
    this.ends.add(cleanUp);
    void sb.exited.then(end);
    const control = sb.started.control;
    if (!(await sb.ready)) {
      end();
      // bwrap's own line (or the init's), as the run without a gateway says it.
      const why = sb.whyNotStarted(await sb.exited);
      throw new ApiError('SANDBOX_START_FAILED', `the sandbox did not start: ${why}`);
    }
    if (control === null || this.closed) {
      end();
      throw new ApiError('SANDBOX_NOT_RUNNING', `sandbox ${name} cannot serve a run`);
    }
    this.opts.audit.emit(
      lifecycle({
        sandbox: name,
        activity: 'start',
        message: `sandbox ${name} started for a carapace run of uid ${owner}`,
        details: { uid: sb.started.identity.uid, owner, limits: sb.started.cgroup?.report },
      }),
    );
    const skipped = sb.started.cgroup?.report.skipped ?? [];
    const notice = skipped.length > 0 ? `carapace: ${skippedLimitsWarning(skipped)}` : null;
    return { name, controlPath: control.socketPath, end, alive: () => alive, memoryBytes, notice };
  }

  /**
   * Kills every run's sandbox and every waiting one (they would die with the process anyway), and
   * removes what they had on the host.
   */
  async close(): Promise<void> {
    this.closed = true;
    for (const w of this.waiting.values()) if (w.timer) clearTimeout(w.timer);
    this.waiting.clear();
    // A sandbox still starting ends itself once started (it sees `closed`); then all are removed.
    await Promise.all([...this.starting]);
    await Promise.all([...this.ends].map((cleanUp) => cleanUp()));
  }
}
