/**
 * The path and query fields every sandbox route shares: a sandbox is named by its owner's label,
 * and root and carapace-admin may name another owner's with `owner`. And a forward, which the
 * sandbox routes and the forward routes both take and show.
 */
import { z } from 'zod';

/** What a sandbox name may be, said as the identity layer says it (assertSandboxName). */
export const sandboxName = z
  .string()
  .regex(/^[a-z0-9][a-z0-9_.-]{0,62}$/, {
    error: (iss) =>
      `${JSON.stringify(iss.input)} is not a sandbox name: use 1-63 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit`,
  })
  .describe('the sandbox name (unique per owner)');

export const owner = z.coerce
  .number()
  .int()
  .min(0)
  .optional()
  .describe('the owner uid (root and carapace-admin only; default: the caller)');

export const forward = z.object({
  hostPort: z.number().int().min(1).max(65535).describe('port on the host loopback'),
  sandboxPort: z.number().int().min(1).max(65535).describe('port of a listener inside the sandbox'),
});

export const forwardView = forward.extend({
  listening: z.boolean().describe('whether the gateway listens on the host port (the sandbox running)'),
  reason: z
    .string()
    .nullable()
    .describe("why a running sandbox's forward does not listen (retried every 5 s); null otherwise"),
});
