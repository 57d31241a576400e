/**
 * What a held sandbox's init says on its control socket's event stream, acted on: connections the
 * kernel refused inside the sandbox, as 4001 events in its audit trail; and the init's requests for
 * a new log file, answered (agent-log.ts) before the event is acknowledged. Each held sandbox is
 * followed with this (held-sandboxes.ts), from its start or its re-adoption to its end.
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
}

/** Follows the sandbox's events until they end (the sandbox ended, or the gateway closes them). */
export async function followEvents(f: FollowedSandbox): Promise<void> {
  const { rec, control, logs } = f;
  const answers = new LogAnswers(f);
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
 * New log files for the sandbox's init. A failure (a full disk, a spawn refused) is a warning in
 * the gateway's log and is tried again after 1 s, 2 s, 4 s … up to every minute, until an answer
 * succeeds, a newer request comes (its answer replaces the retry), or the events end: the init,
 * full, drops its agent's output until it has a new file, and it asks only twice per file. An
 * answer is idempotent (agent-log.ts: the request names the file the init writes), so a retry of
 * a request that a later one already answered only hands over the current file again.
 */
class LogAnswers {
  private timer: NodeJS.Timeout | null = null;
  /** The latest request's number: an older one's failure schedules nothing. */
  private latest = 0;
  private stopped = false;

  constructor(private readonly f: FollowedSandbox) {}

  run(answer: () => Promise<boolean>): Promise<void> {
    this.cancel();
    return this.attempt(++this.latest, answer, FIRST_RETRY_MS);
  }

  stop(): void {
    this.stopped = true;
    this.cancel();
  }

  private cancel(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private async attempt(n: number, answer: () => Promise<boolean>, waitMs: number): Promise<void> {
    try {
      await answer();
    } catch (err) {
      if (this.stopped || n !== this.latest) return;
      this.f.log?.({
        level: 'warn',
        msg: 'cannot rotate a sandbox log',
        sandbox: this.f.rec.name,
        error: (err as Error).message,
        retryInMs: waitMs,
      });
      this.cancel();
      this.timer = setTimeout(() => {
        this.timer = null;
        void this.attempt(n, answer, Math.min(waitMs * 2, LAST_RETRY_MS));
      }, waitMs);
      this.timer.unref();
    }
  }
}
