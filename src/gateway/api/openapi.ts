/** The OpenAPI 3.1 document of the API, built from the route declarations' zod schemas. */
import { z } from 'zod';
import { API_ERROR_STATUS } from './errors.js';
import type { Route } from './router.js';

const json = (schema: z.ZodType) =>
  z.toJSONSchema(schema, { target: 'draft-2020-12', unrepresentable: 'any' });

const ERROR_BODY = z.object({
  error: z.object({
    code: z.enum(Object.keys(API_ERROR_STATUS) as [string, ...string[]]).describe('stable error code'),
    message: z.string().describe('one line for people'),
    details: z.unknown().optional(),
  }),
});

export function openApiDocument(routes: readonly Route[], version: string): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of routes) {
    const parameters: unknown[] = [];
    for (const [where, schema] of [
      ['path', r.params],
      ['query', r.query],
    ] as const) {
      if (!schema) continue;
      for (const [name, field] of Object.entries(schema.shape)) {
        const f = field as z.ZodType;
        parameters.push({
          name,
          in: where,
          required: where === 'path' || !f.safeParse(undefined).success,
          schema: json(f),
          ...(f.description ? { description: f.description } : {}),
        });
      }
    }
    const ok =
      r.stream === 'jsonl'
        ? {
            description: 'JSON lines, one object per line, until the stream ends',
            content: { 'application/x-ndjson': { schema: r.response ? json(r.response) : {} } },
          }
        : r.stream === 'upgrade'
          ? { description: 'switches to the framed stream protocol (docs/gateway.md)' }
          : r.produces !== undefined
            ? { description: 'success', content: { [r.produces]: { schema: { type: 'string' } } } }
            : {
                description: 'success',
                content: { 'application/json': { schema: r.response ? json(r.response) : {} } },
              };
    paths[r.path] ??= {};
    paths[r.path]![r.method.toLowerCase()] = {
      summary: r.summary,
      ...(parameters.length ? { parameters } : {}),
      ...(r.body
        ? { requestBody: { required: true, content: { 'application/json': { schema: json(r.body) } } } }
        : {}),
      responses: {
        [r.stream === 'upgrade' ? '101' : '200']: ok,
        default: { description: 'an error', content: { 'application/json': { schema: json(ERROR_BODY) } } },
      },
    };
  }
  return {
    openapi: '3.1.0',
    info: { title: 'Carapace gateway API', version },
    servers: [{ url: 'http://localhost', description: 'over the gateway Unix socket (docs/gateway.md)' }],
    paths,
  };
}
