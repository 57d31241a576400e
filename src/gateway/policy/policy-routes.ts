/**
 * The API of a sandbox's policy: read it (any revision) and its history, set it, update it by
 * operations, roll it back. Scoped like every sandbox route: a user names only their own sandboxes,
 * root and carapace-admin may name anyone's with `owner`. The author of a change is the caller the
 * socket says, never a field of the request.
 */
import { z } from 'zod';
import { owner, sandboxName as name } from '../route-params.js';
import { defineRoute, type Route } from '../api/router.js';
import type { ChangeOptions, PolicyService } from './policy-service.js';

const params = z.object({ name });
const ownerQuery = z.object({ owner });

const revision = z.object({
  rev: z.number().int().describe('revision number, from 1 (the policy the sandbox was created with)'),
  hash: z.string().describe('sha256 of the text, hex'),
  author: z.number().int().describe('uid of the caller who made it'),
  createdAt: z.string(),
  action: z.enum(['create', 'set', 'update', 'rollback']),
  effect: z
    .enum(['live', 'start', 'restart'])
    .describe(
      'live: applied to the running sandbox; start: in force when it starts; restart: it was restarted',
    ),
  diff: z.array(z.string()).describe('one line per change against the revision before'),
  sections: z.array(z.string()).describe('top-level sections that changed'),
  restores: z.number().int().nullable().describe('for a rollback: the revision whose text it restores'),
  source: z
    .enum(['create', 'set', 'update', 'rollback', 'approve', 'inference'])
    .describe(
      'where it came from: the policy command (as action), an approved proposal (approve), or carapace inference set',
    ),
  proposal: z.number().int().nullable().describe('for an approval: the proposal it approved'),
  current: z.boolean().describe('the latest revision: what the sandbox runs, or starts with'),
  text: z.string().optional().describe('the policy YAML (GET of one revision)'),
});

const changeResult = z.object({
  outcome: z
    .enum(['applied', 'stored', 'restarted', 'unchanged'])
    .describe(
      'applied: in force now; stored: in force when the sandbox starts; restarted: the sandbox was restarted with it; unchanged: no revision made',
    ),
  revision,
  generation: z
    .number()
    .int()
    .nullable()
    .describe("the proxy's policy generation now in force, when swapped"),
  closedTunnels: z.number().int().describe('raw tunnels the new policy no longer allows, closed'),
});

const change = {
  baseRev: z
    .number()
    .int()
    .min(1)
    .optional()
    .describe(
      'the revision this change is based on: refused (VERSION_CONFLICT) if it is no longer the latest',
    ),
  restart: z
    .boolean()
    .default(false)
    .describe(
      'when the change needs it (a static section of a running sandbox), store it and restart the sandbox',
    ),
};

/** The options a request may set: never `origin` (only approving a proposal makes an approval). */
const fromRequest = (b: { baseRev?: number | undefined; restart: boolean }): ChangeOptions => ({
  baseRev: b.baseRev,
  restart: b.restart,
});

const policyKey = z.string().min(1).max(256).optional().describe('network policy entry to edit');
const operation = z.discriminatedUnion('op', [
  z.object({
    op: z.literal('add-endpoint'),
    endpoint: z.string().describe('host:port[:access[:protocol[:enforcement]]]'),
    binaries: z.array(z.string()).default([]).describe('restrict the added endpoint to these executables'),
    policyKey,
  }),
  z.object({ op: z.literal('remove-endpoint'), endpoint: z.string().describe('host:port'), policyKey }),
  z.object({
    op: z.enum(['add-rule', 'remove-rule']),
    kind: z.enum(['allow', 'deny']),
    rule: z.string().describe('host:port:METHOD:path'),
    policyKey,
  }),
  z.object({
    op: z.enum(['add-preset', 'remove-preset']),
    preset: z.union([
      z.object({ name: z.string().describe('a built-in preset (carapace policy presets)') }),
      z.object({
        text: z
          .string()
          .max(2 ** 20)
          .describe("a preset file's YAML"),
        file: z.string().max(256).optional(),
      }),
    ]),
    replace: z.boolean().default(false).describe('add-preset: replace an entry the preset conflicts with'),
    force: z.boolean().default(false).describe('remove-preset: remove entries edited since'),
  }),
]);

export function policyRoutes(policies: PolicyService): Route[] {
  const base = '/v1/sandboxes/{name}/policy';
  return [
    defineRoute({
      method: 'GET',
      path: base,
      summary: "a sandbox's policy: the latest revision, or revision rev",
      params,
      query: z.object({
        owner,
        rev: z.coerce.number().int().min(1).optional().describe('a revision number'),
      }),
      response: revision,
      handler: ({ caller, params: p, query: q }) =>
        Promise.resolve(policies.get(caller, p.name, q.owner, q.rev)),
    }),
    defineRoute({
      method: 'GET',
      path: `${base}/revisions`,
      summary:
        "a sandbox's policy history, oldest first: author, time, source, hash and diff of every revision",
      params,
      query: ownerQuery,
      response: z.array(revision),
      handler: ({ caller, params: p, query: q }) =>
        Promise.resolve(policies.history(caller, p.name, q.owner)),
    }),
    defineRoute({
      method: 'PUT',
      path: base,
      summary:
        'set the policy: network and inference apply live; a static section needs a stopped sandbox or restart',
      params,
      query: ownerQuery,
      body: z.object({
        policy: z
          .string()
          .max(2 ** 20)
          .describe('the policy YAML'),
        ...change,
      }),
      response: changeResult,
      handler: ({ caller, params: p, query: q, body }) =>
        policies.set(caller, p.name, q.owner, body.policy, fromRequest(body)),
    }),
    defineRoute({
      method: 'POST',
      path: `${base}/operations`,
      summary:
        'update the policy by operations (as carapace policy apply-ops), on the latest revision, comments kept',
      params,
      query: ownerQuery,
      body: z.object({ operations: z.array(operation).min(1).max(256), ...change }),
      response: changeResult,
      handler: ({ caller, params: p, query: q, body }) =>
        policies.update(caller, p.name, q.owner, body.operations, fromRequest(body)),
    }),
    defineRoute({
      method: 'POST',
      path: `${base}/rollback`,
      summary: 'roll back: a new revision with the text of revision `to`, applied as a set would be',
      params,
      query: ownerQuery,
      body: z.object({ to: z.number().int().min(1).describe('the revision to restore'), ...change }),
      response: changeResult,
      handler: ({ caller, params: p, query: q, body }) =>
        policies.rollback(caller, p.name, q.owner, body.to, fromRequest(body)),
    }),
  ];
}
