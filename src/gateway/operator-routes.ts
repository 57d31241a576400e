/**
 * The operator's live routes on the API socket: `GET /v1/events` (JSON lines, as long as the client
 * stays: decisions, proposals, sandbox changes; what `carapace term` shows) and
 * `POST /v1/dashboard` (the web dashboard's address and the caller's token: `carapace dashboard`).
 */
import { z } from 'zod';
import { defineRoute, type Route } from './api/router.js';
import type { Dashboard } from './dashboard/server.js';
import type { OperatorEvents } from './operator-events.js';

export function operatorRoutes(events: OperatorEvents, dashboard: Dashboard): Route[] {
  return [
    defineRoute({
      method: 'GET',
      path: '/v1/events',
      summary: "live events of the caller's sandboxes (everyone's for admins), as JSON lines, until closed",
      stream: 'jsonl',
      handler: ({ caller, req, res }) => {
        res.writeHead(200, { 'Content-Type': 'application/x-ndjson', 'Cache-Control': 'no-store' });
        res.write(JSON.stringify({ type: 'hello' }) + '\n');
        const detach = events.attach(caller, {
          write: (e) => res.write(JSON.stringify(e) + '\n'),
          get buffered() {
            return res.writableLength;
          },
          end: () => req.socket.destroy(),
        });
        req.socket.once('close', detach);
        return Promise.resolve({ streamed: true });
      },
    }),
    defineRoute({
      method: 'POST',
      path: '/v1/dashboard',
      summary: "the web dashboard's address on 127.0.0.1 and the caller's token (its only authentication)",
      response: z.object({ url: z.string(), port: z.number().int(), token: z.string() }),
      handler: ({ caller }) => dashboard.open(caller),
    }),
  ];
}
