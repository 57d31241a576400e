/**
 * The policy file format: NVIDIA OpenShell's sandbox policy, accepted unchanged, plus Carapace's
 * optional extensions (`limits`, `inference`, `listen_ports`, endpoint `credentials`).
 *
 * The schema checks shape and types only; rules that need several fields or a whole policy at once
 * (wildcards, paths, `access` vs `rules`, CIDRs, references between sections) live in
 * load/semantic-checks.ts, so each message can point at the offending node. Every object is strict:
 * an unknown key is an error, never silently ignored, because a misspelt guardrail (`acess:`)
 * must not quietly become no guardrail.
 */
import { z } from 'zod';
import { InferenceSchema, LimitsSchema } from './schema-extensions.js';

const Port = z.number().int().min(1).max(65535);

export const FilesystemPolicySchema = z
  .strictObject({
    include_workdir: z
      .boolean()
      .optional()
      .describe('When true, the working directory the sandbox is started in is added to read_write.'),
    read_only: z
      .array(z.string().describe('An absolute path, readable (and executable) beneath it.'))
      .optional()
      .describe('Paths the agent may read but not modify, e.g. /usr, /lib, /etc.'),
    read_write: z
      .array(z.string().describe('An absolute path, readable and writable beneath it; never `/`.'))
      .optional()
      .describe('Paths the agent may read and write, e.g. /sandbox, /tmp.'),
  })
  .describe('Which paths exist inside the sandbox and how. Static: fixed when the sandbox is created.');

export const LandlockSchema = z
  .strictObject({
    compatibility: z
      .enum(['best_effort', 'hard_requirement'])
      .optional()
      .describe(
        'best_effort (default): use the highest Landlock ABI the kernel offers, run without it when absent. ' +
          'hard_requirement: refuse to start when Landlock cannot be applied in full.',
      ),
  })
  .describe('Landlock LSM enforcement of the filesystem policy. Static.');

export const ProcessSchema = z
  .strictObject({
    run_as_user: z
      .union([z.string(), z.number().int()])
      .optional()
      .describe('User the agent runs as: a name or a numeric uid; never root/0.'),
    run_as_group: z
      .union([z.string(), z.number().int()])
      .optional()
      .describe('Group the agent runs as: a name or a numeric gid; never root/0.'),
  })
  .describe('The identity of the agent process inside the sandbox. Static.');

export const QueryMatcherSchema = z
  .union([
    z.string().describe('A glob every value of the parameter must match (`*` matches any characters).'),
    z
      .strictObject({
        any: z
          .array(z.string().describe('A glob.'))
          .min(1)
          .describe('The value must match at least one of these globs.'),
      })
      .describe('A list of alternative globs.'),
  ])
  .describe('How one query parameter is matched.');

const QueryMapSchema = z
  .record(z.string(), QueryMatcherSchema)
  .describe('Query parameters by decoded name; every listed parameter must be present and match.');

const HttpMatchFields = {
  method: z
    .string()
    .describe(
      'HTTP method: any RFC 9110 token (GET, M-SEARCH, …), case-insensitive; `*` alone matches every method.',
    ),
  path: z
    .string()
    .describe('URL path glob: `*` matches within one segment (also `/bot*/…`), `**` any number of segments.'),
  query: QueryMapSchema.optional(),
};

export const AllowRuleSchema = z
  .strictObject({
    allow: z.strictObject(HttpMatchFields).describe('The requests this rule allows.'),
  })
  .describe('One allow rule of an inspected (L7) endpoint.');

export const DenyRuleSchema = z
  .strictObject(HttpMatchFields)
  .describe('Requests to refuse even when an allow rule or the access preset allows them. Deny wins.');

export const PROTOCOLS = ['rest', 'websocket', 'tcp', 'graphql', 'sql', 'json-rpc', 'mcp'] as const;

export const EndpointSchema = z
  .strictObject({
    host: z
      .string()
      .optional()
      .describe(
        'Host name or IP address, case-insensitive. `*.example.com` matches exactly one label below ' +
          'example.com, `**.example.com` any number of labels; neither matches example.com itself. ' +
          'May be omitted only when allowed_ips is set (then any host on the port, if it resolves there).',
      ),
    port: Port.optional().describe('TCP port, 1–65535. Use either port or ports.'),
    ports: z.array(Port).min(1).optional().describe('Several TCP ports, 1–65535 each.'),
    protocol: z
      .enum(PROTOCOLS)
      .optional()
      .describe(
        'rest or websocket: the proxy inspects each HTTP request (L7). tcp: bytes pass through (L4). ' +
          'Omitted: L4, unless rules, deny_rules or a narrowing access preset ask for inspection.',
      ),
    tls: z
      .enum(['terminate', 'passthrough', 'skip'])
      .optional()
      .describe(
        'skip: never terminate TLS on this endpoint. terminate and passthrough are accepted for ' +
          'OpenShell compatibility and mean the default: terminate TLS when requests must be inspected.',
      ),
    enforcement: z
      .enum(['enforce', 'audit'])
      .optional()
      .describe(
        'enforce (Carapace default): refuse requests the rules do not allow. audit: allow them and ' +
          'record the violation. OpenShell defaults to audit.',
      ),
    access: z
      .enum(['read-only', 'read-write', 'full'])
      .optional()
      .describe(
        'Method preset: read-only = GET, HEAD, OPTIONS; read-write adds POST, PUT, PATCH (not DELETE); ' +
          'full = every method. Mutually exclusive with rules.',
      ),
    rules: z.array(AllowRuleSchema).optional().describe('Allow rules; mutually exclusive with access.'),
    deny_rules: z.array(DenyRuleSchema).optional().describe('Deny rules; they win over allow rules.'),
    allowed_ips: z
      .array(z.string().describe('An IPv4/IPv6 address or CIDR.'))
      .optional()
      .describe(
        'Addresses the host may resolve to, including private ones the proxy otherwise refuses (SSRF guard).',
      ),
    credentials: z
      .array(z.string().describe('A credential name, e.g. GITHUB_TOKEN.'))
      .optional()
      .describe('Carapace: credentials the proxy may inject into requests to this (inspected) endpoint.'),
  })
  .describe('A destination the policy entry allows.');

export const BinarySchema = z
  .strictObject({
    path: z
      .string()
      .describe('Absolute path of an executable, or a glob: `*` within one segment, `**` any depth.'),
    harness: z.boolean().optional().describe('Deprecated OpenShell field; accepted and ignored.'),
    descendants: z
      .boolean()
      .optional()
      .describe(
        'Carapace: true also admits the programs this one starts, and theirs (it is then an ancestor ' +
          "of the caller). Off by default: a process forked before its parent exec'd this program " +
          'would pass as its child (docs/security.md).',
      ),
  })
  .describe('An executable allowed to use the endpoints (with descendants: true, also what it starts).');

export const NetworkPolicySchema = z
  .strictObject({
    name: z.string().optional().describe('Display name used in logs and decisions; defaults to the key.'),
    endpoints: z.array(EndpointSchema).min(1).describe('The destinations this entry allows.'),
    binaries: z
      .array(BinarySchema)
      .optional()
      .describe('Executables allowed to use the endpoints; omitted = any executable in the sandbox.'),
  })
  .describe('One named network grant: these binaries may reach these endpoints.');

export const NetworkPoliciesSchema = z
  .record(z.string(), NetworkPolicySchema)
  .describe('Named network grants. Dynamic: hot-reloaded into a running sandbox.');

export const PolicySchema = z
  .strictObject({
    version: z.literal(1).describe('Schema version; must be 1.'),
    filesystem_policy: FilesystemPolicySchema.optional(),
    landlock: LandlockSchema.optional(),
    process: ProcessSchema.optional(),
    network_policies: NetworkPoliciesSchema.optional(),
    limits: LimitsSchema.optional(),
    inference: InferenceSchema.optional(),
    listen_ports: z
      .array(Port)
      .optional()
      .describe('Carapace: TCP ports the agent may listen on inside the sandbox. Static.'),
  })
  .describe('A Carapace / OpenShell sandbox policy.');

export const PresetSchema = z
  .strictObject({
    version: z.literal(1).optional().describe('Schema version; must be 1 when present.'),
    preset: z
      .strictObject({
        name: z.string().min(1).describe('The name used with --add-preset and show-preset.'),
        description: z.string().optional().describe('One line saying what the preset allows.'),
      })
      .describe('The preset header.'),
    network_policies: NetworkPoliciesSchema,
  })
  .describe('A preset: network grants to merge into a policy.');

export type Policy = z.infer<typeof PolicySchema>;
export type Preset = z.infer<typeof PresetSchema>;
export type NetworkPolicy = z.infer<typeof NetworkPolicySchema>;
export type Endpoint = z.infer<typeof EndpointSchema>;
export type AllowRule = z.infer<typeof AllowRuleSchema>;
export type DenyRule = z.infer<typeof DenyRuleSchema>;
export type QueryMatcher = z.infer<typeof QueryMatcherSchema>;
export type Binary = z.infer<typeof BinarySchema>;
export type FilesystemPolicy = z.infer<typeof FilesystemPolicySchema>;
export type Protocol = (typeof PROTOCOLS)[number];
export type Access = NonNullable<Endpoint['access']>;
export type Enforcement = NonNullable<Endpoint['enforcement']>;
