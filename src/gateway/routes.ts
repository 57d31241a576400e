/**
 * The gateway's API routes (v1): sandboxes and the gateway itself. Each route's zod schemas are
 * its contract: they validate requests and make the OpenAPI document at /openapi.json.
 */
import { z } from 'zod';
import { forward, forwardView, owner, sandboxName as name } from './route-params.js';
import { ApiError } from './api/errors.js';
import { openApiDocument } from './api/openapi.js';
import { defineRoute, type Route } from './api/router.js';
import type { LogService } from './sandboxes/log-service.js';
import { METRICS_CONTENT_TYPE, type GatewayMetrics } from './metrics.js';
import { policyRoutes } from './policy/policy-routes.js';
import type { PolicyService } from './policy/policy-service.js';
import type { SandboxService } from './sandboxes/sandbox-service.js';
import type { AuditRouter } from './audit-router.js';
import { sandboxIoRoutes } from './sandbox-io-routes.js';

export interface GatewayInfo {
  version: string;
  pid: number;
  startedAt: number;
  socket: string;
  rootless: boolean;
  /** The options it runs with, as given. */
  options: string[];
}

const sandboxParams = z.object({ name });
const ownerQuery = z.object({ owner });

const sandboxView = z.object({
  name: z.string(),
  id: z.string().describe('opaque id: the key of the sandbox on the host'),
  owner: z.number().int().describe('owner uid'),
  state: z.enum(['creating', 'running', 'stopping', 'stopped', 'failed']),
  desired: z.enum(['running', 'stopped']),
  command: z.array(z.string()),
  workspace: z.string(),
  restart: z.enum(['never', 'on-failure', 'always']),
  labels: z.record(z.string(), z.string()),
  forwards: z.array(forwardView),
  policyRev: z.number().int(),
  restarts: z.number().int().describe('how often its restart policy started it again'),
  exitCode: z.number().int().nullable(),
  reason: z.string().nullable(),
  createdAt: z.string(),
  updatedAt: z.string(),
  version: z.number().int().describe('resource version; bumped by every change'),
});

const createBody = z.object({
  name,
  command: z.array(z.string()).min(1).describe('the agent command and its arguments'),
  policy: z
    .string()
    .max(2 ** 20)
    .optional()
    .describe('policy YAML (default: the built-in default policy)'),
  workspace: z
    .string()
    .startsWith('/')
    .optional()
    .describe('host directory at /sandbox (default: one the gateway makes)'),
  env: z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/), z.string()).default({}),
  credentials: z
    .record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/), z.string().min(1))
    .default({})
    .describe('credential values by name: sealed at rest, the agent sees placeholders'),
  mounts: z
    .array(
      z.object({
        host: z.string().startsWith('/'),
        path: z.string().startsWith('/'),
        readOnly: z.boolean().default(false),
      }),
    )
    .default([]),
  forwards: z.array(forward).default([]),
  labels: z.record(z.string().regex(/^[A-Za-z0-9_.\-/]{1,63}$/), z.string().max(256)).default({}),
  restart: z.enum(['never', 'on-failure', 'always']).default('never'),
  start: z.boolean().default(true),
});

const graceBody = z.object({
  grace: z
    .number()
    .int()
    .min(0)
    .max(3_600_000)
    .optional()
    .describe('milliseconds between SIGTERM and SIGKILL'),
});

export function gatewayRoutes(opts: {
  sandboxes: SandboxService;
  logs: LogService;
  audit: AuditRouter;
  policies: PolicyService;
  metrics: GatewayMetrics;
  info: GatewayInfo;
  /** Routes of other services (providers and inference: provider-routes.ts). */
  extra?: Route[];
}): Route[] {
  const { sandboxes } = opts;
  const routes: Route[] = [
    defineRoute({
      method: 'GET',
      path: '/v1/gateway',
      summary: 'the gateway: version, pid, uptime, socket, and who the caller is',
      response: z.object({
        version: z.string(),
        pid: z.number().int(),
        uptimeSeconds: z.number(),
        socket: z.string(),
        rootless: z.boolean(),
        caller: z.object({ uid: z.number().int(), admin: z.boolean() }),
        options: z.array(z.string()).describe('the options it runs with, as given (gateway run OPTIONS)'),
      }),
      handler: ({ caller }) =>
        Promise.resolve({
          version: opts.info.version,
          pid: opts.info.pid,
          uptimeSeconds: Math.round((Date.now() - opts.info.startedAt) / 1000),
          socket: opts.info.socket,
          rootless: opts.info.rootless,
          caller,
          options: opts.info.options,
        }),
    }),
    defineRoute({
      method: 'GET',
      path: '/v1/sandboxes',
      summary: "the caller's sandboxes (all=true: everyone's, for root and carapace-admin)",
      query: z.object({ all: z.enum(['true', 'false']).optional() }),
      response: z.array(sandboxView),
      handler: ({ caller, query }) => Promise.resolve(sandboxes.listJson(caller, query.all === 'true')),
    }),
    defineRoute({
      method: 'POST',
      path: '/v1/sandboxes',
      summary: 'create a sandbox (and start it, unless start is false)',
      body: createBody,
      response: sandboxView,
      handler: async ({ caller, body }) => ({
        status: 201,
        body: sandboxes.view(await sandboxes.create(caller, body)),
      }),
    }),
    defineRoute({
      method: 'GET',
      path: '/v1/sandboxes/{name}',
      summary: 'one sandbox',
      params: sandboxParams,
      query: ownerQuery,
      response: sandboxView,
      handler: ({ caller, params, query }) =>
        Promise.resolve(sandboxes.view(sandboxes.resolve(caller, params.name, query.owner))),
    }),
    defineRoute({
      method: 'PATCH',
      path: '/v1/sandboxes/{name}',
      summary: 'change what needs no restart: the restart policy, labels (version: only if still that one)',
      params: sandboxParams,
      query: ownerQuery,
      body: z.object({
        restart: z.enum(['never', 'on-failure', 'always']).optional(),
        labels: z.record(z.string().regex(/^[A-Za-z0-9_.\-/]{1,63}$/), z.string().max(256)).optional(),
        version: z
          .number()
          .int()
          .optional()
          .describe('the version the change is based on (compare-and-swap)'),
      }),
      response: sandboxView,
      handler: ({ caller, params, query, body }) =>
        Promise.resolve(sandboxes.view(sandboxes.update(caller, params.name, query.owner, body))),
    }),
    ...(['start', 'stop', 'restart'] as const).map((op) =>
      defineRoute({
        method: 'POST',
        path: `/v1/sandboxes/{name}/${op}`,
        summary: `${op} a sandbox`,
        params: sandboxParams,
        query: ownerQuery,
        body: graceBody,
        response: sandboxView,
        handler: async ({ caller, params, query, body }) => {
          const rec =
            op === 'start'
              ? await sandboxes.start(caller, params.name, query.owner)
              : await sandboxes[op](caller, params.name, query.owner, body.grace);
          return sandboxes.view(rec);
        },
      }),
    ),
    defineRoute({
      method: 'DELETE',
      path: '/v1/sandboxes/{name}',
      summary: 'stop a sandbox and remove it and what is its (a workspace the caller gave is kept)',
      params: sandboxParams,
      query: z.object({ owner, keepWorkspace: z.enum(['true', 'false']).optional() }),
      response: z.object({ deleted: z.string(), keptWorkspace: z.string().nullable() }),
      handler: async ({ caller, params, query }) => {
        const { kept } = await sandboxes.delete(
          caller,
          params.name,
          query.owner,
          query.keepWorkspace === 'true',
        );
        return { deleted: params.name, keptWorkspace: kept };
      },
    }),
    defineRoute({
      method: 'GET',
      path: '/v1/sandboxes/{name}/logs',
      summary: "the agent's output (or, with audit=true, the sandbox's audit events), as JSON lines",
      params: sandboxParams,
      query: z.object({
        owner,
        follow: z.enum(['true', 'false']).optional(),
        tail: z.coerce.number().int().min(0).optional(),
        lines: z
          .enum(['true', 'false'])
          .optional()
          .describe("with tail, of the agent's output: the last N lines of it, not the last N records"),
        since: z.coerce.number().int().min(0).optional().describe('unix milliseconds'),
        audit: z.enum(['true', 'false']).optional(),
        type: z.enum(['denied', 'allowed', 'lifecycle', 'all']).optional(),
        host: z.string().optional(),
      }),
      stream: 'jsonl',
      handler: async ({ caller, params, query, req, res }) => {
        const rec = sandboxes.resolve(caller, params.name, query.owner);
        await opts.logs.stream(rec, query, req, res);
        return { streamed: true };
      },
    }),
    ...policyRoutes(opts.policies),
    defineRoute({
      method: 'GET',
      path: '/metrics',
      produces: METRICS_CONTENT_TYPE,
      summary:
        "Prometheus text format 0.0.4: the gateway's own series, and the caller's sandboxes' (everyone's for admins)",
      handler: async ({ caller, res }) => {
        const text = await opts.metrics.render(caller);
        res.writeHead(200, {
          'Content-Type': METRICS_CONTENT_TYPE,
          'Content-Length': Buffer.byteLength(text),
        });
        res.end(text);
        return { streamed: true };
      },
    }),
    ...(opts.extra ?? []),
  ];
  routes.push(...sandboxIoRoutes(sandboxes, opts.audit));
  routes.push(
    defineRoute({
      method: 'GET',
      path: '/openapi.json',
      summary: 'this document',
      handler: () => Promise.resolve(openApiDocument(routes, opts.info.version)),
    }),
  );
  return routes;
}

export { ApiError };
