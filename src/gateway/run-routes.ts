/**
 * `carapace run` through the gateway: `GET /v1/runs` upgrades like exec, takes a
 * one-off sandbox of the caller's (sandboxes/one-off-runs.ts), and joins the connection to an exec of the
 * client's command there. When the connection ends (the command exited, or the client went away)
 * the sandbox is killed and removed. A refusal before the upgrade (too many runs, a sandbox that
 * did not start) tells the client to run the sandbox in its own process instead.
 */
import { lifecycle, type AuditSink } from '../audit/index.js';
import { defineRoute, type Route } from './api/router.js';
import type { UpgradedStream } from './api/server.js';
import { answerExec } from './sandbox-io/exec-bridge.js';
import type { OneOffRuns } from './sandboxes/one-off-runs.js';

export function runRoutes(runs: OneOffRuns, audit: AuditSink): Route[] {
  return [
    defineRoute({
      method: 'GET',
      path: '/v1/runs',
      summary:
        'carapace run: a one-off sandbox of the default policy for one command; upgrade, send one JSON line {argv, env, cwd, tty, cols, rows}, then frames as for exec (docs/gateway.md)',
      stream: 'upgrade',
      handler: async ({ caller, body }) => {
        const { socket, head } = body as UpgradedStream;
        const sb = await runs.take(caller);
        // The connection is the run: when it ends, so does the sandbox (already, if the client left).
        socket.once('close', sb.end);
        if (socket.destroyed || !socket.writable) {
          sb.end();
          return { streamed: true };
        }
        await answerExec(
          socket,
          head,
          sb.controlPath,
          (request) =>
            audit.emit(
              lifecycle({
                sandbox: sb.name,
                activity: 'update',
                message: `run by uid ${caller.uid}: ${request.argv.join(' ')}`.slice(0, 512),
                details: { exec: { uid: caller.uid, argv: request.argv, tty: request.tty } },
              }),
            ),
          // No run: its sandbox goes now, not when the client lets go of the connection.
          sb.end,
          sb.notice,
        );
        return { streamed: true };
      },
    }),
  ];
}
