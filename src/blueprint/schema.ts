/**
 * blueprint.yaml: what an agent is (its runtime, packages, command, home and config files), what
 * it may do (a base policy and presets), where its model is (inference), and how Carapace runs it
 * (forwarded ports, a health check, limits). Unknown keys are an error, as in policies.
 *
 * Everything the agent image is made of is pinned: the runtime and every package by exact version
 * and npm integrity (sha512), checked after the install, so the registry cannot hand a blueprint's
 * users something its author did not pick.
 */
import { z } from 'zod';

const SEMVER = /^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$/;
const semver = z.string().regex(SEMVER, 'must be an exact version such as 1.2.3');
const integrity = z
  .string()
  .regex(
    /^sha512-[A-Za-z0-9+/]{86}==$/,
    'must be an npm integrity string: sha512-… (npm view PKG dist.integrity)',
  );
const absolutePath = z
  .string()
  .regex(/^\/(?!.*(?:^|\/)\.\.?(?:\/|$))/, 'must be an absolute path without . or ..');
const envName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/);

export const BLUEPRINT_NAME = /^[a-z0-9][a-z0-9-]{0,62}$/;

export const PackageSchema = z
  .strictObject({
    name: z
      .string()
      .regex(/^(@[a-z0-9][a-z0-9._-]*\/)?[a-z0-9][a-z0-9._-]*$/, 'must be an npm package name')
      .describe('npm package name'),
    version: semver.describe('exact version'),
    integrity: integrity.describe("the package tarball's npm integrity (dist.integrity)"),
  })
  .describe('one npm package, pinned');

export const RuntimeSchema = z
  .strictObject({
    node: z
      .strictObject({
        version: semver.describe('exact Node.js version (the node-linux-<arch> npm package of that version)'),
        integrity: z
          .partialRecord(z.enum(['x64', 'arm64']), integrity)
          .describe("the node-linux-<arch> package's npm integrity, per architecture"),
      })
      .describe('Node.js, from the node-linux-<arch> npm package'),
  })
  .describe("the agent's language runtime");

export const ConfigFileSchema = z
  .strictObject({
    path: absolutePath.describe('where the file goes inside the sandbox (under a writable path)'),
    source: z
      .string()
      .regex(/^(?!\/)(?!.*(?:^|\/)\.\.?(?:\/|$)).+$/, 'must be a relative path inside the blueprint')
      .describe('the template in the blueprint directory'),
    mode: z
      .string()
      .regex(/^0?[0-7]{3}$/, 'must be an octal mode such as "0644"')
      .default('0644')
      .describe('its mode'),
  })
  .describe(
    'a config file written from a template ({{inference.url}}, {{forward.0}}, …) before the first start',
  );

export const AgentSchema = z
  .strictObject({
    runtime: RuntimeSchema.optional(),
    packages: z.array(PackageSchema).default([]).describe('npm packages installed into the agent image'),
    command: z
      .array(z.string().min(1))
      .min(1)
      .describe("the agent's command; a bare name is looked up in the image's bin/ first"),
    environment: z
      .record(envName, z.string())
      .default({})
      .describe("the agent's environment (templated); never a secret: keys stay with the router"),
    home: absolutePath.default('/sandbox').describe("the agent's HOME"),
    files: z.array(ConfigFileSchema).default([]),
    writable: z.array(absolutePath).default([]).describe('paths the agent writes, besides /sandbox and /tmp'),
    read_only: z.array(absolutePath).default([]).describe('paths the agent reads, besides the base policy'),
  })
  .describe('the agent');

export const BlueprintPolicySchema = z
  .strictObject({
    base: z
      .string()
      .regex(/^(?!\/)(?!.*(?:^|\/)\.\.?(?:\/|$)).+$/, 'must be a relative path inside the blueprint')
      .optional()
      .describe('the base policy file in the blueprint (default: the built-in default policy)'),
    presets: z
      .array(z.string().regex(/^[a-z0-9][a-z0-9-]*$/))
      .default([])
      .describe('built-in presets merged in'),
  })
  .describe("the sandbox's policy");

export const InferenceDefaultsSchema = z
  .strictObject({
    protocol: z
      .enum(['openai', 'anthropic', 'responses'])
      .describe('the wire protocol the agent speaks to inference.local'),
    model: z.string().min(1).optional().describe('the model asked for when onboarding names none'),
  })
  .describe("the agent's model, through inference.local");

export const HealthSchema = z
  .strictObject({
    command: z
      .array(z.string().min(1))
      .min(1)
      .optional()
      .describe('run inside the sandbox; healthy when it exits 0'),
    url: z
      .string()
      .regex(
        /^http:\/\/(127\.0\.0\.1|localhost):\d+(\/.*)?$/,
        'must be http://127.0.0.1:PORT/… (a listener inside)',
      )
      .optional()
      .describe('healthy when it answers (any status below 500)'),
    timeout: z.number().int().min(1).max(3600).default(120).describe('seconds to wait for health'),
  })
  .describe('how onboarding knows the agent is up');

export const BlueprintLimitsSchema = z
  .strictObject({
    memory: z.string().optional(),
    pids: z.number().int().min(1).optional(),
    cpu: z.union([z.string(), z.number()]).optional(),
    open_files: z.number().int().min(1).optional(),
  })
  .describe("the sandbox's limits, over the base policy's");

export const BlueprintSchema = z
  .strictObject({
    name: z.string().regex(BLUEPRINT_NAME, 'must be lower case letters, digits and "-"').describe('the name'),
    version: semver.describe("the blueprint's version"),
    min_carapace_version: semver.describe('the oldest Carapace that runs it'),
    description: z.string().min(1).max(500),
    agent: AgentSchema,
    policy: BlueprintPolicySchema.default({ presets: [] }),
    inference: InferenceDefaultsSchema.optional(),
    forward: z.array(z.number().int().min(1).max(65535)).default([]).describe('ports forwarded to the host'),
    health: HealthSchema.optional(),
    restart: z.enum(['never', 'on-failure', 'always']).default('on-failure'),
    limits: BlueprintLimitsSchema.optional(),
  })
  .describe('a blueprint');

export type Blueprint = z.infer<typeof BlueprintSchema>;
export type BlueprintPackage = z.infer<typeof PackageSchema>;

/** a < b → negative; semver precedence without build metadata (prereleases sort first). */
export function compareVersions(a: string, b: string): number {
  const parse = (v: string) => {
    const [core = '', pre] = v.split('+')[0]!.split(/-(.*)/s);
    return { nums: core.split('.').map(Number), pre };
  };
  const x = parse(a);
  const y = parse(b);
  for (let i = 0; i < 3; i++) {
    const d = (x.nums[i] ?? 0) - (y.nums[i] ?? 0);
    if (d !== 0) return d;
  }
  if (x.pre === y.pre) return 0;
  if (x.pre === undefined) return 1;
  if (y.pre === undefined) return -1;
  return x.pre < y.pre ? -1 : 1;
}
