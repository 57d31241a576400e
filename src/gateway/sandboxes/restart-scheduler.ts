/**
 * What follows a sandbox's agent ending by itself: its restart policy (restart-policy.ts) decides,
 * the end and the decision go to the sandbox's audit trail, and a restart waits for its backoff
 * here until it is due or called off (`sandbox stop`, a start by hand, the gateway stopping).
 * A start of its policy's (or the gateway's, of a sandbox that should run) that fails is a crash
 * like any other: it waits for its backoff and is tried again, until it starts or its crash loop
 * ends it `failed` (startFailed).
 *
 * The runs it counts are this gateway's lifetime only: a gateway restart starts every count again,
 * and a crash loop's `failed` is stored (`desired: stopped`), so it is not forgotten with them.
 */
import { lifecycle } from '../../audit/index.js';
import type { AuditRouter } from '../audit-router.js';
import { nextStep, type RestartSettings, type Run } from './restart-policy.js';
import type { SandboxRecord, SandboxStore } from '../store/sandbox-store.js';

export interface RestartSchedulerOptions {
  store: SandboxStore;
  audit: AuditRouter;
  restart?: RestartSettings | undefined;
  /** The gateway's own log. */
  log?: ((entry: Record<string, unknown>) => void) | undefined;
  /** Starts a record's sandbox again (the launcher's start). */
  start: (rec: SandboxRecord) => Promise<void>;
  /** Whether a record's sandbox runs now (a restart due then is not needed). */
  isRunning: (id: string) => boolean;
}

export class RestartScheduler {
  /** Recent runs of each sandbox, for its restart policy (this gateway's lifetime only). */
  private readonly runs = new Map<string, Run[]>();
  /** Restarts waiting for their backoff, and when each is due. */
  private readonly pending = new Map<string, { timer: NodeJS.Timeout; at: number }>();

  constructor(private readonly opts: RestartSchedulerOptions) {}

  /** The agent ended by itself: its restart policy says what next. */
  ended(id: string, run: Run): void {
    const rec = this.opts.store.get(id);
    if (!rec || rec.desired !== 'running') return;
    const runs = [...(this.runs.get(id) ?? []), run].slice(-32);
    this.runs.set(id, runs);
    const step = nextStep(rec.spec.restart, runs, this.opts.restart);
    // Its trail says each end and what the restart policy made of it (`sandbox logs --audit`).
    const next =
      step.kind === 'restart'
        ? `restarting in ${formatMs(step.delayMs)}`
        : step.kind === 'crash-loop'
          ? `${step.reason}; it is failed`
          : 'it stays stopped';
    const what =
      run.exitCode === null
        ? `${rec.name} did not start again: ${run.error}`
        : `agent of ${rec.name} ended with status ${run.exitCode} after ${formatMs(run.exitedAt - run.startedAt)}`;
    this.opts.audit.emit(
      lifecycle({
        sandbox: id,
        activity: 'stop',
        message: `${what} (restart ${rec.spec.restart}): ${next}`,
        details: {
          exit_code: run.exitCode,
          ...(run.exitCode === null ? { start_error: run.error } : {}),
          restart: rec.spec.restart,
          next: step.kind,
          ...(step.kind === 'restart' ? { delay_ms: step.delayMs } : {}),
        },
      }),
    );
    if (step.kind === 'stay-stopped') {
      this.opts.store.update(id, { desired: 'stopped' });
      return;
    }
    if (step.kind === 'crash-loop') {
      // It waits for `sandbox start`: not to run, so a gateway restart or a reboot leaves it be.
      this.opts.store.update(id, { state: 'failed', desired: 'stopped', reason: step.reason });
      this.opts.log?.({
        level: 'warn',
        msg: 'sandbox in a crash loop',
        sandbox: rec.name,
        owner: rec.ownerUid,
      });
      return;
    }
    this.opts.store.update(id, {
      reason: `restarting in ${formatMs(step.delayMs)} (${run.exitCode === null ? `its start failed: ${run.error}` : `status ${run.exitCode}`})`,
    });
    const timer = setTimeout(() => {
      this.pending.delete(id);
      const cur = this.opts.store.get(id);
      if (!cur || cur.desired !== 'running' || this.opts.isRunning(id)) return;
      this.opts.store.update(id, { restarts: cur.restarts + 1 });
      const startedAt = Date.now();
      this.opts.start(this.opts.store.get(id)!).catch((err: unknown) => {
        this.startFailed(id, startedAt, err);
      });
    }, step.delayMs);
    this.pending.set(id, { timer, at: Date.now() + step.delayMs });
  }

  /** When a restart waiting for its backoff is due (ms since the epoch); null: none waits. */
  restartAt(id: string): number | null {
    return this.pending.get(id)?.at ?? null;
  }

  /**
   * A start the gateway made by itself failed (a restart of its policy's, or at the gateway's own
   * start): stored as `failed` with the reason, and, unless its policy is `never`, counted as a
   * crash: tried again after its backoff, or ended by its crash loop. Never left down for good
   * while its policy would have it run.
   */
  startFailed(id: string, startedAt: number, err: unknown): void {
    const error = err instanceof Error ? err.message : String(err);
    const rec = this.opts.store.get(id);
    if (!rec) return;
    this.opts.store.update(id, { state: 'failed', reason: error });
    this.opts.log?.({
      level: 'warn',
      msg: 'sandbox could not be started again',
      sandbox: rec.name,
      owner: rec.ownerUid,
      error,
    });
    if (rec.spec.restart === 'never') return;
    this.ended(id, { startedAt, exitedAt: Date.now(), exitCode: null, error });
  }

  /** Calls off a restart waiting for its backoff; returns whether one was waiting. */
  cancel(id: string): boolean {
    const t = this.pending.get(id);
    if (t) clearTimeout(t.timer);
    return this.pending.delete(id);
  }

  /** Forgets the restart history of a sandbox (started by hand: a fresh count). */
  resetRuns(id: string): void {
    this.runs.delete(id);
  }

  /** Forgets a sandbox's restart history and calls off its restart (it is being deleted). */
  forget(id: string): void {
    this.cancel(id);
    this.runs.delete(id);
  }

  /** Calls off every restart waiting (the gateway stops: the next one decides again). */
  cancelAll(): void {
    for (const id of [...this.pending.keys()]) this.cancel(id);
  }
}

function formatMs(ms: number): string {
  return ms < 1000 ? `${ms}ms` : ms < 120_000 ? `${Math.round(ms / 1000)}s` : `${Math.round(ms / 60_000)}m`;
}
