/**
 * The API of proposals (proposals.ts): list them, read one, approve (optionally with an edited
 * rule), reject (for good or for a quiet period), approve every one without risk notes, and the
 * history of decisions. Scoped like every sandbox route: a user sees and decides only the
 * proposals of their own sandboxes; root and carapace-admin anyone's. The approver recorded in
 * the policy revision is the caller the socket says.
 */
import { z } from 'zod';
import { METHOD_PATTERN } from '../../policy/index.js';
import { owner, sandboxName } from '../route-params.js';
import { defineRoute, type Route } from '../api/router.js';
import type { ProposalService } from './proposals.js';

const sandbox = sandboxName.optional().describe('only the proposals of this sandbox');
const params = z.object({ id: z.coerce.number().int().min(1).describe('the proposal id') });

const rule = z.object({
  kind: z.enum(['endpoint', 'request']),
  host: z.string(),
  port: z.number().int(),
  binaries: z.array(z.string()),
  method: z.string().optional(),
  path: z.string().optional(),
  policyKey: z.string(),
  credentials: z.array(z.string()),
  summary: z.string(),
});

export const proposalSchema = z.object({
  id: z.number().int(),
  sandbox: z.string(),
  owner: z.number().int(),
  status: z.enum(['pending', 'approved', 'rejected', 'superseded']),
  source: z.enum(['denial', 'agent']).describe('a denial, or the agent through policy.local'),
  level: z.enum(['connect', 'request']).describe('refused at the connection (L4) or the request (L7)'),
  host: z.string(),
  port: z.number().int(),
  binary: z.string().describe('the calling executable, as the kernel names it'),
  ancestors: z.array(z.string()).describe("its parents' executables, nearest first"),
  method: z.string().nullable(),
  pathPattern: z.string().nullable(),
  hits: z.number().int(),
  firstSeen: z.string(),
  lastSeen: z.string(),
  samples: z.array(z.object({ t: z.string(), method: z.string().optional(), path: z.string().optional() })),
  policyRev: z.number().int().describe('the policy revision it was last denied under'),
  rule: rule.nullable().describe('the smallest rule that allows it, against the latest revision'),
  risks: z.array(z.string()).describe('what approving it would widen; approve-all --safe skips any with one'),
  rationale: z.string().nullable(),
  decidedBy: z.number().int().nullable(),
  decidedAt: z.string().nullable(),
  quietUntil: z.string().nullable(),
  appliedRev: z.number().int().nullable(),
  outcome: z.string().nullable(),
});

const approval = z.object({
  proposal: proposalSchema,
  outcome: z
    .enum(['applied', 'stored', 'superseded'])
    .describe(
      'applied: live now; stored: at the next start; superseded: the latest revision allows it already',
    ),
  revision: z.number().int().nullable(),
  risks: z
    .array(z.string())
    .describe('the risk notes of the rule as written (edited or not): what this approval widened'),
});

export function proposalRoutes(proposals: ProposalService): Route[] {
  return [
    defineRoute({
      method: 'GET',
      path: '/v1/proposals',
      summary: "proposals of the caller's sandboxes, newest first (status: pending, decided or all)",
      query: z.object({
        sandbox,
        owner,
        all: z.enum(['true', 'false']).optional(),
        status: z.enum(['pending', 'decided', 'all']).default('pending'),
      }),
      response: z.array(proposalSchema),
      handler: ({ caller, query }) =>
        Promise.resolve(
          proposals.list(caller, query.status, {
            sandbox: query.sandbox,
            owner: query.owner,
            all: query.all === 'true',
          }),
        ),
    }),
    defineRoute({
      method: 'GET',
      path: '/v1/proposals/{id}',
      summary: 'one proposal',
      params,
      response: proposalSchema,
      handler: ({ caller, params: p }) => Promise.resolve(proposals.get(caller, p.id)),
    }),
    defineRoute({
      method: 'POST',
      path: '/v1/proposals/{id}/approve',
      summary: 'approve: its rule (or the edited one) becomes a policy revision, applied live',
      params,
      body: z.object({
        rule: z
          .object({
            host: z.string().min(1).max(253).optional(),
            port: z.number().int().min(1).max(65535).optional(),
            binaries: z.array(z.string().startsWith('/').max(4096)).max(64).optional(),
            method: z.string().regex(METHOD_PATTERN).optional(),
            path: z.string().max(2048).optional(),
          })
          .optional()
          .describe('the rule as the operator edited it (approve --edit)'),
      }),
      response: approval,
      handler: ({ caller, params: p, body }) => proposals.approve(caller, p.id, body.rule),
    }),
    defineRoute({
      method: 'POST',
      path: '/v1/proposals/{id}/reject',
      summary: 'reject: it stays closed, for good or for forSeconds, however often the agent retries',
      params,
      body: z.object({
        forSeconds: z
          .number()
          .int()
          .min(1)
          .max(10 * 365 * 86400)
          .optional()
          .describe('the quiet period; without it, rejected for good'),
      }),
      response: proposalSchema,
      handler: ({ caller, params: p, body }) =>
        Promise.resolve(
          proposals.reject(caller, p.id, body.forSeconds === undefined ? undefined : body.forSeconds * 1000),
        ),
    }),
    defineRoute({
      method: 'POST',
      path: '/v1/proposals/approve-safe',
      summary: 'approve every pending proposal without risk notes (of one sandbox, or all the caller’s)',
      body: z.object({ sandbox, owner }),
      response: z.object({ approved: z.array(approval), skipped: z.array(proposalSchema) }),
      handler: ({ caller, body }) => proposals.approveSafe(caller, body),
    }),
  ];
}
