/**
 * What a held sandbox's init says on its control socket's event stream, acted on: connections the
 * kernel refused inside the sandbox, as 4001 events in its audit trail; and the init's requests for
 * a new log file, answered (agent-log.ts) before the event is acknowledged. The launcher follows
 * each sandbox it holds with this, from its start or its re-adoption to its end.
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
  if (f.adopted) await answerLog(f, () => logs.resume(rec.id, control));
  try {
    for await (const e of f.events) {
      if (e.event === 'log') {
        if (typeof e.file === 'string') await answerLog(f, () => logs.answer(rec.id, control, e));
        continue;
      }
      const refused = parseDirectConnect(e as unknown as InitEvent);
      if (refused) f.audit.emit(directConnectEvent(await import('../../audit/index.js'), rec.id, refused));
    }
  } catch {
    // the sandbox ended, or the gateway closes: its events wait for the next subscriber
  }
}

/**
 * A new log file for the sandbox's init. A failure is the gateway log's: the init, full, drops
 * its agent's output and asks once more; the next gateway settles the log when it re-adopts the
 * sandbox (AgentLogs.resume).
 */
async function answerLog(f: FollowedSandbox, answer: () => Promise<boolean>): Promise<void> {
  try {
    await answer();
  } catch (err) {
    f.log?.({
      level: 'warn',
      msg: 'cannot rotate a sandbox log',
      sandbox: f.rec.name,
      error: (err as Error).message,
    });
  }
}
