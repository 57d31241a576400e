/**
 * The API's routes for providers and for sandboxes' inference routes and usage (docs/gateway.md).
 * A provider's key goes in (create, update) and never comes out: views carry its fingerprint.
 */
import { z } from 'zod';
import { owner, sandboxName } from '../route-params.js';
import { PROVIDER_TYPES } from '../../policy/index.js';
import { defineRoute, type Route } from '../api/router.js';
import type { InferenceService } from './inference-service.js';
import type { ProviderService } from './provider-service.js';

// Longer than a name may be (63): the service refuses a bad name with a line that says how to fix it.
const providerName = z.string().min(1).max(255).describe('the provider name (unique per owner)');
const type = z.enum(PROVIDER_TYPES).describe(`the provider type: ${PROVIDER_TYPES.join(', ')}`);
const credential = z
  .string()
  .min(1)
  .max(4096)
  .describe('the API key: sealed at rest, never shown again (views show its fingerprint)');

const providerView = z.object({
  name: z.string(),
  owner: z.number().int(),
  type,
  baseUrl: z.string(),
  fingerprint: z.string().nullable().describe('sha256:… of the key; null when it has none'),
  createdAt: z.string(),
  updatedAt: z.string(),
});

const probe = z.object({
  ok: z.boolean(),
  status: z.number().int().nullable(),
  latencyMs: z.number(),
  models: z.array(z.string()),
  error: z.string().optional(),
});

const counts = z.object({
  requests: z.number().int(),
  tokensIn: z.number().int(),
  tokensOut: z.number().int(),
});

export function providerRoutes(opts: { providers: ProviderService; inference: InferenceService }): Route[] {
  const { providers, inference } = opts;
  const params = z.object({ name: providerName });
  return [
    defineRoute({
      method: 'GET',
      path: '/v1/providers',
      summary: "the caller's providers (all=true: everyone's, for root and carapace-admin)",
      query: z.object({ all: z.enum(['true', 'false']).optional() }),
      response: z.array(providerView),
      handler: ({ caller, query }) =>
        Promise.resolve(providers.list(caller, query.all === 'true').map((p) => providers.view(p))),
    }),
    defineRoute({
      method: 'POST',
      path: '/v1/providers',
      summary: 'create a provider (its key is sealed at rest); 201',
      query: z.object({ owner }),
      body: z.object({
        name: providerName,
        type,
        baseUrl: z.string().optional().describe("the API's base URL (default: the type's)"),
        credential: credential.optional(),
      }),
      response: providerView,
      handler: ({ caller, query, body }) =>
        Promise.resolve({ status: 201, body: providers.view(providers.create(caller, body, query.owner)) }),
    }),
    defineRoute({
      method: 'GET',
      path: '/v1/providers/{name}',
      summary: 'one provider (its fingerprint, never its key)',
      params,
      query: z.object({ owner }),
      response: providerView,
      handler: ({ caller, params: p, query }) =>
        Promise.resolve(providers.view(providers.get(caller, p.name, query.owner))),
    }),
    defineRoute({
      method: 'PATCH',
      path: '/v1/providers/{name}',
      summary: 'change a provider: type, base URL, key (null removes a key the type does not need)',
      params,
      query: z.object({ owner }),
      body: z.object({
        type: type.optional(),
        baseUrl: z.string().optional(),
        credential: credential.nullable().optional(),
      }),
      response: providerView,
      handler: ({ caller, params: p, query, body }) =>
        Promise.resolve(providers.view(providers.update(caller, p.name, body, query.owner))),
    }),
    defineRoute({
      method: 'DELETE',
      path: '/v1/providers/{name}',
      summary: 'delete a provider (routes that name it become unavailable)',
      params,
      query: z.object({ owner }),
      response: z.object({ deleted: z.string() }),
      handler: ({ caller, params: p, query }) => {
        providers.delete(caller, p.name, query.owner);
        return Promise.resolve({ deleted: p.name });
      },
    }),
    defineRoute({
      method: 'POST',
      path: '/v1/providers/{name}/test',
      summary: 'one minimal request to the provider: latency and the models it lists',
      params,
      query: z.object({ owner }),
      response: probe,
      handler: ({ caller, params: p, query }) => providers.test(caller, p.name, query.owner),
    }),
    defineRoute({
      method: 'GET',
      path: '/v1/sandboxes/{name}/inference',
      summary: "a sandbox's inference section and its routes",
      params: z.object({ name: sandboxName }),
      query: z.object({ owner }),
      response: z.object({
        sandbox: z.string(),
        policyRev: z.number().int(),
        inference: z.record(z.string(), z.unknown()).nullable(),
        routes: z.array(
          z.object({
            name: z.string(),
            provider: z.string(),
            type: z.string().nullable(),
            baseUrl: z.string().nullable(),
            model: z.string(),
            local: z.boolean(),
            inline: z.boolean(),
            default: z.boolean(),
          }),
        ),
      }),
      handler: ({ caller, params: p, query }) => inference.get(caller, p.name, query.owner),
    }),
    defineRoute({
      method: 'PUT',
      path: '/v1/sandboxes/{name}/inference',
      summary:
        "replace a sandbox's inference section (a new policy revision, live when it runs; null removes it)",
      params: z.object({ name: sandboxName }),
      query: z.object({ owner }),
      body: z.object({ inference: z.record(z.string(), z.unknown()).nullable() }),
      handler: ({ caller, params: p, query, body }) =>
        inference.set(caller, p.name, query.owner, body.inference),
    }),
    defineRoute({
      method: 'POST',
      path: '/v1/sandboxes/{name}/inference/test',
      summary: "try each route's provider (or one route's) with one minimal request",
      params: z.object({ name: sandboxName }),
      query: z.object({ owner, route: z.string().optional() }),
      response: z.array(probe.extend({ route: z.string(), provider: z.string() })),
      handler: ({ caller, params: p, query }) => inference.test(caller, p.name, query.owner, query.route),
    }),
    defineRoute({
      method: 'GET',
      path: '/v1/inference/usage',
      summary:
        "inference usage of the caller's sandboxes (or one: sandbox=NAME; all=true: everyone's), per route",
      query: z.object({ owner, sandbox: sandboxName.optional(), all: z.enum(['true', 'false']).optional() }),
      response: z.array(
        z.object({
          sandbox: z.string(),
          route: z.string(),
          local: z.boolean(),
          hour: counts,
          day: counts,
          total: counts,
        }),
      ),
      handler: ({ caller, query }) =>
        Promise.resolve(inference.usage(caller, query.sandbox, query.owner, query.all === 'true')),
    }),
  ];
}
