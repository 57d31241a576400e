/**
 * What a held sandbox's init says on its control socket's event stream, acted on: connections the
 * kernel refused inside the sandbox, as 4001 events in its audit trail; and the init's requests for
 * a new log file, answered (agent-log.ts) before the event is acknowledged, at most once per
 * MIN_ANSWER_INTERVAL_MS. Each held sandbox is followed with this (held-sandboxes.ts), from its
 * start or its re-adoption to its end.
 */
import { directConnectEvent, parseDirectConnect } from '../../runtime/direct-connect-audit.js';
import type { ControlEvent, SandboxControl } from '../../sandbox/control/control.js';
import type { InitEvent } from '../../sandbox/launch/running-sandbox.js';
import type { AuditRouter } from '../audit-router.js';
import type { SandboxRecord } from '../store/sandbox-store.js';
import type { AgentLogs } from './agent-log.js';

export interface FollowedSandbox {
  rec: SandboxRecord;
  control: SandboxControl;
  events: AsyncIterable<ControlEvent>;
  /** Re-adopted (started by an earlier gateway): its log is settled first (AgentLogs.resume). */
  adopted: boolean;
  logs: AgentLogs;
  audit: AuditRouter;
  /** The gateway's own log. */
  log?: ((entry: Record<string, unknown>) => void) | undefined;
  /**
   * Resolves when the sandbox is gone: a request still waiting for its interval is then never
   * answered (its answer would make a log file after `sandbox delete` removed them).
   */
  ended?: Promise<unknown> | undefined;
}

/** Follows the sandbox's events until they end (the sandbox ended, or the gateway closes them). */
export async function followEvents(f: FollowedSandbox): Promise<void> {
  const { rec, control, logs } = f;
  const answers = new LogAnswers(f);
  void f.ended?.then(() => answers.stop());
  try {
    if (f.adopted) await answers.run(() => logs.resume(rec.id, control));
    for await (const e of f.events) {
      if (e.event === 'log') {
        if (typeof e.file === 'string') await answers.run(() => logs.answer(rec.id, control, e));
        continue;
      }
      const refused = parseDirectConnect(e as unknown as InitEvent);
      if (refused) f.audit.emit(directConnectEvent(await import('../../audit/index.js'), rec.id, refused));
    }
  } catch {
    // the sandbox ended, or the gateway closes: its events wait for the next subscriber
  } finally {
    answers.stop();
  }
}

/** The first retry of a failed answer; each next one waits twice as long, up to a minute. */
const FIRST_RETRY_MS = 1_000;
const LAST_RETRY_MS = 60_000;

/**
 * The least time between two answers to one sandbox (docs/security.md, "What a sandbox makes the
 * gateway do"). Each answer forks the gateway (carapace-sendfd), in the gateway's cgroup whatever
 * the child joins later: 17 to 19 ms of the gateway's CPU on the test host. The sandbox decides how
 * often it asks (how fast it writes; a hostile init, as often as it likes), so the gateway decides
 * how often it answers: at most once a second per sandbox. A faster writer gets drops and a count
 * in its next file (native/logs.c), never a larger file and never more of the gateway.
 */
export const MIN_ANSWER_INTERVAL_MS = 1_000;

/**
 * New log files for the sandbox's init. A failure (a full disk, a spawn refused) is a warning in
 * the gateway's log and is tried again after 1 s, 2 s, 4 s … up to every minute, until an answer
 * succeeds, a newer request comes (its answer replaces the retry), or the events end: the init,
 * full, drops its agent's output until it has a new file, and it asks only twice per file. An
 * answer is idempotent (agent-log.ts: the request names the file the init writes), so a retry of
 * a request that a later one already answered only hands over the current file again.
 *
 * No answer starts within MIN_ANSWER_INTERVAL_MS of the previous one: a request that comes sooner
 * is answered when the interval is over, before its event is acknowledged (only this sandbox's
 * events wait meanwhile). Each answer is one line in
 * the gateway's log, with the requests it answered late (`deferred`).
 */
class LogAnswers {
  private timer: NodeJS.Timeout | null = null;
  /** The latest request's number: an older one's failure schedules nothing. */
  private latest = 0;
  private stopped = false;
  /** When the next answer may start (performance.now()). */
  private nextAt = 0;
  /** Requests that came within the interval since the last answer. */
  private deferred = 0;
  /** Ends the wait of a deferred request (stop). */
  private wake: (() => void) | null = null;

  constructor(private readonly f: FollowedSandbox) {}

  async run(answer: () => Promise<boolean>): Promise<void> {
    this.cancel();
    const n = ++this.latest;
    const wait = this.nextAt - performance.now();
    if (wait > 0) {
      // Waited for here, before the event is acknowledged: only this sandbox's events wait.
      this.deferred++;
      await new Promise<void>((resolve) => {
        this.wake = resolve;
        this.timer = setTimeout(resolve, wait);
        this.timer.unref();
      });
      this.timer = null;
      this.wake = null;
    }
    return this.attempt(n, answer, FIRST_RETRY_MS);
  }

  stop(): void {
    this.stopped = true;
    this.cancel();
    this.wake?.();
  }

  private cancel(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private schedule(n: number, answer: () => Promise<boolean>, inMs: number, retryMs: number): void {
    this.cancel();
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.attempt(n, answer, retryMs);
    }, inMs);
    this.timer.unref();
  }

  private async attempt(n: number, answer: () => Promise<boolean>, waitMs: number): Promise<void> {
    if (this.stopped) return;
    this.nextAt = performance.now() + MIN_ANSWER_INTERVAL_MS;
    const deferred = this.deferred;
    this.deferred = 0;
    try {
      const rotated = await answer();
      this.f.log?.({
        level: 'info',
        msg: 'answered a sandbox log request',
        sandbox: this.f.rec.name,
        rotated,
        deferred,
      });
    } catch (err) {
      if (this.stopped || n !== this.latest) return;
      const retryInMs = Math.max(waitMs, MIN_ANSWER_INTERVAL_MS);
      this.f.log?.({
        level: 'warn',
        msg: 'cannot rotate a sandbox log',
        sandbox: this.f.rec.name,
        error: (err as Error).message,
        retryInMs,
      });
      this.schedule(n, answer, retryInMs, Math.min(retryInMs * 2, LAST_RETRY_MS));
    }
  }
}
