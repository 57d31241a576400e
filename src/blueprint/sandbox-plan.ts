/**
 * A verified blueprint + its agent image + the user's choices → what the gateway is asked to
 * create: the policy text, the command, the environment, the read-only mounts of the image and
 * runtime, the forwarded ports and the config files written into the workspace before the first
 * start.
 *
 * Templates (`{{inference.url}}`, …) are filled from a fixed vocabulary; an unknown name is an
 * error, never an empty string, so a typo cannot silently write a config without a model URL.
 * No value of the vocabulary is a secret: the provider's key stays in the gateway (sealed) and
 * is injected by the router; the agent only ever sees inference.local.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { parseDocument } from 'yaml';
import {
  applyPolicyOperations,
  loadBuiltinPreset,
  parsePolicy,
  PolicyError,
  type PolicyOperation,
} from '../policy/index.js';
import { BlueprintError } from './errors.js';
import { IMAGE_MOUNT, RUNTIME_MOUNT, type AgentImage } from './image.js';
import type { Blueprint } from './schema.js';

export const TIERS = ['restricted', 'balanced', 'open'] as const;
export type Tier = (typeof TIERS)[number];

/** What `open` adds to `balanced`: the package registries an agent that builds software needs. */
const OPEN_PRESETS = ['npm', 'pypi', 'huggingface'];

export interface PlanChoices {
  sandbox: string;
  /** The stored provider the agent's model calls go to, and the model; null: no inference section. */
  route: { provider: string; model: string } | null;
  tier: Tier;
  /** Presets asked for besides the tier's. */
  presets: string[];
  /** Sandbox port → host port. */
  hostPorts: Record<number, number>;
  /** A random token the agent's own gateway may require (OpenClaw's), kept in the workspace config. */
  token: string;
}

export interface ConfigFileOut {
  /** Inside the sandbox (under /sandbox: written into the workspace on the host). */
  path: string;
  content: string;
  mode: number;
}

export interface SandboxPlan {
  policy: string;
  command: string[];
  env: Record<string, string>;
  mounts: { host: string; path: string; readOnly: boolean }[];
  forwards: { hostPort: number; sandboxPort: number }[];
  files: ConfigFileOut[];
  restart: 'never' | 'on-failure' | 'always';
  labels: Record<string, string>;
}

export function inferenceUrl(protocol: 'openai' | 'anthropic' | 'responses' | undefined): string {
  // Anthropic's SDKs add /v1/messages to their base URL; OpenAI's add /chat/completions or /responses.
  return protocol === 'anthropic' ? 'https://inference.local' : 'https://inference.local/v1';
}

export function templateValues(b: Blueprint, c: PlanChoices): Record<string, string> {
  const values: Record<string, string> = {
    'sandbox.name': c.sandbox,
    home: b.agent.home,
    image: IMAGE_MOUNT,
    runtime: RUNTIME_MOUNT,
    token: c.token,
    'inference.url': inferenceUrl(b.inference?.protocol),
    'inference.model': c.route?.model ?? b.inference?.model ?? 'default',
    'inference.route': 'default',
  };
  b.forward.forEach((port, i) => {
    values[`forward.${i}`] = String(port);
    values[`forward.${i}.host`] = String(c.hostPorts[port] ?? port);
  });
  return values;
}

/** Fills `{{name}}`; an unknown name is an error naming the template. */
export function fillTemplate(text: string, values: Record<string, string>, where: string): string {
  return text.replace(/\{\{\s*([a-z0-9_.]+)\s*\}\}/g, (_m, name: string) => {
    const v = values[name];
    if (v === undefined)
      throw new BlueprintError(
        'BLUEPRINT_INVALID',
        `${where}: unknown template value {{${name}}}; known: ${Object.keys(values).sort().join(', ')}`,
      );
    return v;
  });
}

/** A bare command name that the image's bin directory has, as its path inside; else left to PATH. */
export function resolveInImage(argv: readonly string[], image: AgentImage): string[] {
  const [first, ...rest] = argv;
  if (
    image.dir !== null &&
    !first!.includes('/') &&
    existsSync(join(image.dir, 'node_modules', '.bin', first!))
  )
    return [`${IMAGE_MOUNT}/node_modules/.bin/${first}`, ...rest];
  return [first!, ...rest];
}

/**
 * The sandbox's policy: the blueprint's base (or the built-in default), the tier's presets and
 * the user's, the agent's extra paths and limits, and the inference route. Built with the policy
 * engine's own edits (comments of the base kept) and validated as any policy is.
 */
export function composePolicy(b: Blueprint, baseText: string, c: PlanChoices): string {
  const presets = [
    ...(c.tier === 'restricted' ? [] : b.policy.presets),
    ...(c.tier === 'open' ? OPEN_PRESETS : []),
    ...c.presets,
  ];
  const ops: PolicyOperation[] = [...new Set(presets)].map((name) => ({
    op: 'add-preset',
    preset: loadBuiltinPreset(name),
    onConflict: 'replace',
  }));
  const edited = applyPolicyOperations(baseText, 'policy', ops).text;
  const doc = parseDocument(edited);
  // Restricted: the agent reaches its model (inference.local) and nothing else.
  if (c.tier === 'restricted') doc.setIn(['network_policies'], doc.createNode({}));
  const readOnly =
    (doc.getIn(['filesystem_policy', 'read_only']) as { toJSON(): string[] } | undefined)?.toJSON() ?? [];
  const readWrite =
    (doc.getIn(['filesystem_policy', 'read_write']) as { toJSON(): string[] } | undefined)?.toJSON() ?? [];
  for (const p of b.agent.read_only) if (!readOnly.includes(p)) readOnly.push(p);
  for (const p of b.agent.writable) if (!readWrite.includes(p)) readWrite.push(p);
  doc.setIn(['filesystem_policy', 'read_only'], doc.createNode(readOnly, { flow: true }));
  doc.setIn(['filesystem_policy', 'read_write'], doc.createNode(readWrite, { flow: true }));
  if (b.limits !== undefined) {
    for (const [k, v] of Object.entries(b.limits)) if (v !== undefined) doc.setIn(['limits', k], v);
  }
  if (b.forward.length > 0) {
    const listen = (
      (doc.getIn(['listen_ports']) as { toJSON(): number[] } | undefined)?.toJSON() ?? []
    ).slice();
    for (const p of b.forward) if (!listen.includes(p)) listen.push(p);
    doc.setIn(['listen_ports'], doc.createNode(listen, { flow: true }));
  }
  if (c.route !== null) {
    doc.setIn(
      ['inference'],
      doc.createNode({
        routes: { default: { provider: c.route.provider, model: c.route.model } },
        default: 'default',
        on_unavailable: 'fail',
      }),
    );
  } else {
    doc.deleteIn(['inference']);
  }
  const text = doc.toString({ lineWidth: 0 });
  const parsed = parsePolicy(text, `the policy of blueprint ${b.name}`);
  if (!parsed.ok) throw new PolicyError(parsed.diagnostics);
  return text;
}

export function planSandbox(
  b: Blueprint,
  digest: string,
  baseText: string,
  templates: Record<string, string>,
  image: AgentImage,
  c: PlanChoices,
): SandboxPlan {
  const values = templateValues(b, c);
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(b.agent.environment))
    env[k] = fillTemplate(v, values, `agent.environment.${k}`);
  const path = [
    ...(image.dir !== null ? [`${IMAGE_MOUNT}/node_modules/.bin`] : []),
    ...(image.runtimeDir !== null ? [`${RUNTIME_MOUNT}/bin`] : []),
    '/usr/local/bin',
    '/usr/bin',
    '/bin',
  ].join(':');
  env.PATH ??= path;
  env.HOME ??= b.agent.home;
  const mounts: SandboxPlan['mounts'] = [];
  if (image.dir !== null) mounts.push({ host: image.dir, path: IMAGE_MOUNT, readOnly: true });
  if (image.runtimeDir !== null) mounts.push({ host: image.runtimeDir, path: RUNTIME_MOUNT, readOnly: true });
  const files = b.agent.files.map((f) => ({
    path: f.path,
    content: fillTemplate(templates[f.source] ?? '', values, f.source),
    mode: parseInt(f.mode, 8),
  }));
  return {
    policy: composePolicy(b, baseText, c),
    command: resolveInImage(b.agent.command, image).map((a, i) =>
      fillTemplate(a, values, `agent.command[${i}]`),
    ),
    env,
    mounts,
    forwards: b.forward.map((p) => ({ hostPort: c.hostPorts[p] ?? p, sandboxPort: p })),
    files,
    restart: b.restart,
    labels: {
      'carapace.blueprint': b.name,
      'carapace.blueprint.version': b.version,
      'carapace.blueprint.digest': digest,
    },
  };
}
