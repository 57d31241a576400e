/**
 * Carapace's extensions to the OpenShell format: resource `limits` (static) and the `inference`
 * routing section (dynamic; the router gives it meaning, this file only fixes its shape).
 */
import { z } from 'zod';

export const LimitsSchema = z
  .strictObject({
    memory: z
      .union([z.number().int(), z.string()])
      .optional()
      .describe(
        'Memory limit: bytes as an integer, or a string with a unit: K, M, G, T (powers of 1000) or ' +
          'Ki, Mi, Gi, Ti (powers of 1024), e.g. 512Mi or 2G.',
      ),
    pids: z.number().int().min(1).optional().describe('Maximum number of processes and threads.'),
    cpu: z
      .union([z.number(), z.string()])
      .optional()
      .describe('CPU limit in cores: a number such as 0.5 or 2, or millicores as a string such as "500m".'),
    open_files: z.number().int().min(1).optional().describe('Maximum open file descriptors per process.'),
  })
  .describe('Carapace: resource limits of the sandbox. Static.');

export const InferenceRouteSchema = z
  .strictObject({
    provider: z.string().min(1).describe('Provider kind, e.g. openai, anthropic, nvidia, ollama.'),
    endpoint: z.string().describe('Base URL of the provider API (http or https).'),
    model: z.string().min(1).describe('Model name sent to the provider.'),
    credential_env: z
      .string()
      .optional()
      .describe('Name of the credential (environment variable on the host) holding the API key.'),
    local: z
      .boolean()
      .optional()
      .describe('True when the model runs on this host or network: prompts never leave it.'),
  })
  .describe('One inference route: where requests to inference.local may be sent.');

export const PrivacyRuleSchema = z
  .strictObject({
    name: z.string().min(1).describe('Name of the rule, shown in audit events.'),
    match: z
      .string()
      .describe('A regular expression (JavaScript syntax) matched against the request content.'),
    route: z.string().describe('The route requests whose content matches must use (usually a local one).'),
  })
  .describe('A privacy rule: content that matches is sent only to the given route.');

export const InferenceSchema = z
  .strictObject({
    routes: z.record(z.string(), InferenceRouteSchema).describe('Inference routes by name.'),
    default: z.string().optional().describe('The route used when no privacy rule applies.'),
    privacy: z.array(PrivacyRuleSchema).optional().describe('Privacy rules, tried in order.'),
    on_unavailable: z
      .enum(['fail', 'fallback'])
      .optional()
      .describe('What to do when the chosen route is down: fail (default) or use the fallback route.'),
    fallback: z.string().optional().describe('The route used when on_unavailable is fallback.'),
  })
  .describe('Carapace: how requests to inference.local are routed. Dynamic.');

export type Limits = z.infer<typeof LimitsSchema>;
export type Inference = z.infer<typeof InferenceSchema>;
export type InferenceRoute = z.infer<typeof InferenceRouteSchema>;
