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

/** A duration: seconds as a number, or a string with a unit (`90s`, `10m`, `1h`, `500ms`). */
const DurationSchema = z
  .union([z.number().positive(), z.string()])
  .describe('A duration: seconds as a number, or a string such as 500ms, 90s, 10m or 1h.');

export const BUILTIN_DETECTORS = [
  'email',
  'phone',
  'payment_card',
  'iban',
  'us_ssn',
  'uk_nino',
  'ip_address',
  'api_key',
  'private_key',
  'jwt',
] as const;
export type BuiltinDetector = (typeof BUILTIN_DETECTORS)[number];

export const BudgetSchema = z
  .strictObject({
    requests_per_hour: z.number().int().min(0).optional().describe('Calls allowed per clock hour (UTC).'),
    requests_per_day: z.number().int().min(0).optional().describe('Calls allowed per day (UTC).'),
    tokens_per_hour: z
      .number()
      .int()
      .min(0)
      .optional()
      .describe('Tokens (prompt + completion) allowed per clock hour (UTC).'),
    tokens_per_day: z
      .number()
      .int()
      .min(0)
      .optional()
      .describe('Tokens (prompt + completion) allowed per day (UTC).'),
    on_exhausted: z
      .enum(['deny', 'fallback'])
      .optional()
      .describe('What an exhausted budget does: deny (default: 429) or fallback to the local route named.'),
    fallback: z
      .string()
      .optional()
      .describe('With on_exhausted: fallback, the route used instead (it must be local: true).'),
  })
  .describe('Carapace: a spending budget; when it is used up, calls are denied or go to a local route.');

export const InferenceRouteSchema = z
  .strictObject({
    provider: z
      .string()
      .min(1)
      .describe(
        'A provider stored by the gateway (carapace provider create NAME), or, when endpoint is given, ' +
          'the provider type: openai, anthropic, nvidia, ollama, vllm, openai-compatible.',
      ),
    endpoint: z
      .string()
      .optional()
      .describe('Base URL of the provider API (http or https): an inline provider of type `provider`.'),
    model: z.string().min(1).describe('Model name sent to the provider.'),
    aliases: z
      .array(z.string().min(1))
      .optional()
      .describe('Model names an agent may ask for that select this route (besides its name and model).'),
    credential_env: z
      .string()
      .optional()
      .describe(
        "Inline providers: the name of the sandbox's credential (carapace run/sandbox create --credential) " +
          'holding the API key.',
      ),
    local: z
      .boolean()
      .optional()
      .describe('True when the model runs on this host or network: prompts never leave it.'),
    timeout: DurationSchema.optional().describe('Longest a call may take in all (default 30m).'),
    idle_timeout: DurationSchema.optional().describe(
      'Longest wait for the next byte from the provider, the first included (default 10m).',
    ),
    on_unavailable: z
      .enum(['fail', 'fail_closed', 'fallback'])
      .optional()
      .describe("When this route's provider cannot be reached: fail (fail_closed) or use its fallback."),
    fallback: z.string().optional().describe('The route used when this one is unavailable.'),
    budget: BudgetSchema.optional().describe("This route's own budget."),
  })
  .describe('One inference route: where requests to inference.local may be sent.');

export const PrivacyRuleSchema = z
  .strictObject({
    name: z.string().min(1).describe('Name of the rule, shown in audit events and denials.'),
    detect: z
      .array(z.enum(BUILTIN_DETECTORS))
      .min(1)
      .optional()
      .describe(`Built-in detectors: ${BUILTIN_DETECTORS.join(', ')}.`),
    match: z
      .string()
      .optional()
      .describe(
        'A regular expression (JavaScript syntax, run by a linear-time engine: no backreferences or ' +
          'lookarounds) matched against the request content.',
      ),
    action: z
      .enum(['route', 'redact', 'deny'])
      .optional()
      .describe(
        'route (default when route is given): send the request to that route; redact: replace what ' +
          'matched with placeholders and restore them in the response; deny: refuse with 403.',
      ),
    route: z.string().optional().describe('For action route: the route (usually a local one).'),
  })
  .describe('A privacy rule: content that matches is routed, redacted or refused before it leaves the host.');

export const InferenceSchema = z
  .strictObject({
    routes: z.record(z.string(), InferenceRouteSchema).describe('Inference routes by name.'),
    default: z
      .string()
      .optional()
      .describe('The route used when neither a privacy rule nor the model picks one.'),
    privacy: z.array(PrivacyRuleSchema).optional().describe('Privacy rules, tried in order.'),
    on_unavailable: z
      .enum(['fail', 'fail_closed', 'fallback'])
      .optional()
      .describe(
        'What to do when the chosen route is down: fail (fail_closed; the default) or use the fallback route.',
      ),
    fallback: z.string().optional().describe('The route used when on_unavailable is fallback.'),
    budget: BudgetSchema.optional().describe(
      "The sandbox's budget over every route that is not local: true.",
    ),
  })
  .describe('Carapace: how requests to inference.local are routed. Dynamic.');

export type Limits = z.infer<typeof LimitsSchema>;
export type Inference = z.infer<typeof InferenceSchema>;
export type InferenceRoute = z.infer<typeof InferenceRouteSchema>;
export type PrivacyRule = z.infer<typeof PrivacyRuleSchema>;
export type InferenceBudget = z.infer<typeof BudgetSchema>;
