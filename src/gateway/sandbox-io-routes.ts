/**
 * Routes that reach into a running sandbox: exec (and so connect, upload, download: the CLI builds
 * them on exec) over an upgraded connection, and port forwards.
 */
import { z } from 'zod';
import { lifecycle } from '../audit/index.js';
import { ApiError } from './api/errors.js';
import { defineRoute, type Route } from './api/router.js';
import type { UpgradedStream } from './api/server.js';
import type { AuditRouter } from './audit-router.js';
import { answerExec } from './sandbox-io/exec-bridge.js';
import type { SandboxService } from './sandboxes/sandbox-service.js';
import { forward, forwardView, sandboxName } from './route-params.js';

const params = z.object({ name: sandboxName });
const owner = z.coerce
  .number()
  .int()
  .min(0)
  .optional()
  .describe('the owner uid (root and carapace-admin only)');

export function sandboxIoRoutes(sandboxes: SandboxService, audit: AuditRouter): Route[] {
  return [
    defineRoute({
      method: 'GET',
      path: '/v1/sandboxes/{name}/exec',
      summary:
        'run a command in a running sandbox: upgrade, send one JSON line {argv, env, cwd, tty, cols, rows}, then frames (docs/gateway.md)',
      params,
      query: z.object({ owner }),
      stream: 'upgrade',
      handler: async ({ caller, params: p, query, body }) => {
        const { socket, head } = body as UpgradedStream;
        const { rec, socket: control } = sandboxes.controlOf(caller, p.name, query.owner);
        await answerExec(socket, head, control, (request) =>
          audit.emit(
            lifecycle({
              sandbox: rec.id,
              activity: 'update',
              message: `exec by uid ${caller.uid}: ${request.argv.join(' ')}`.slice(0, 512),
              details: { exec: { uid: caller.uid, argv: request.argv, tty: request.tty } },
            }),
          ),
        );
        return { streamed: true };
      },
    }),
    defineRoute({
      method: 'GET',
      path: '/v1/sandboxes/{name}/forwards',
      summary: "the sandbox's port forwards",
      params,
      query: z.object({ owner }),
      response: z.array(forwardView),
      handler: ({ caller, params: p, query }) =>
        Promise.resolve(sandboxes.view(sandboxes.resolve(caller, p.name, query.owner)).forwards),
    }),
    defineRoute({
      method: 'POST',
      path: '/v1/sandboxes/{name}/forwards',
      summary: 'forward a host loopback port to a listener inside (kept, and restored with the sandbox)',
      params,
      query: z.object({ owner }),
      body: forward,
      response: z.array(forwardView),
      handler: ({ caller, params: p, query, body }) =>
        sandboxes.addForward(caller, p.name, query.owner, body),
    }),
    defineRoute({
      method: 'DELETE',
      path: '/v1/sandboxes/{name}/forwards/{hostPort}',
      summary: 'remove a port forward',
      params: params.extend({ hostPort: z.coerce.number().int().min(1).max(65535) }),
      query: z.object({ owner }),
      response: z.array(forwardView),
      handler: ({ caller, params: p, query }) =>
        sandboxes.removeForward(caller, p.name, query.owner, p.hostPort),
    }),
  ];
}

export { ApiError };
