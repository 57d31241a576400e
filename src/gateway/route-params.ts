/**
 * The path and query fields every sandbox route shares: a sandbox is named by its owner's label,
 * and root and carapace-admin may name another owner's with `owner`.
 */
import { z } from 'zod';

export const sandboxName = z
  .string()
  .regex(/^[a-z0-9][a-z0-9_.-]{0,62}$/)
  .describe('the sandbox name (unique per owner)');

export const owner = z.coerce
  .number()
  .int()
  .min(0)
  .optional()
  .describe('the owner uid (root and carapace-admin only; default: the caller)');
