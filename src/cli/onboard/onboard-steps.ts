/**
 * The steps of `carapace onboard`, once the answers are known (onboard-command.ts asks or reads
 * them): the blueprint and its image, the provider, the sandbox (its health: onboard-health.ts).
 * Each step looks at what exists first and changes only what the answers ask for, so a rerun of
 * the same answers changes nothing, and a rerun that adds a preset or names a tier changes the
 * policy through a policy update (the latest revision, approved rules and earlier presets
 * included, is what it edits; live, no restart).
 *
 * The provider's key is read by the caller (environment or hidden prompt) and goes only into the
 * request body to the gateway over the caller's socket; it is never an argument, never printed,
 * never written here.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { resolveBlueprint, isBuiltinDigest } from '../../blueprint/catalog.js';
import { ImageStore, type AgentImage } from '../../blueprint/image.js';
import { saveAnswers, type OnboardAnswers } from '../../blueprint/onboard-answers.js';
import { planSandbox, type PlanChoices } from '../../blueprint/sandbox-plan.js';
import { tierChange, tierOperations } from '../../blueprint/tier-change.js';
import type { BlueprintStore, TrustSettings, VerifiedBlueprint } from '../../blueprint/store.js';
import { builtinPoliciesDir, loadBuiltinPreset, type ProviderType } from '../../policy/index.js';
import { PROVIDER_INFO } from '../../router/providers.js';
import { UsageError } from '../errors.js';
import { checkProviderAnswers } from './onboard-preflight.js';
import { GatewayError, type GatewayClient } from '../gateway/gateway-client.js';
import { imageHost, ownArch } from '../blueprint/blueprint-host.js';

export interface StepContext {
  state: string;
  store: BlueprintStore;
  trust: TrustSettings;
  upstreamCa?: string | undefined;
  /** One line of progress for the person waiting. */
  say(line: string): void;
}

export interface SandboxView {
  name: string;
  state: string;
  labels: Record<string, string>;
  forwards: { hostPort: number; sandboxPort: number }[];
  workspace: string;
  reason: string | null;
}

interface ProviderView {
  name: string;
  type: string;
  baseUrl: string;
  fingerprint: string | null;
}

export async function blueprintStep(
  ctx: StepContext,
  answers: OnboardAnswers,
): Promise<{ v: VerifiedBlueprint; image: AgentImage }> {
  const { blueprint: v, installedNow } = resolveBlueprint(answers.agent, ctx.store, ctx.trust);
  ctx.say(
    `${installedNow ? 'installed' : 'verified'} blueprint ${v.blueprint.name} ${v.blueprint.version} (${v.digest})`,
  );
  const images = new ImageStore(ctx.state);
  const cached = images.installed(v, ownArch()) || v.blueprint.agent.packages.length === 0;
  const image = await images.ensure(v, await imageHost({ upstreamCa: ctx.upstreamCa }));
  if (cached) ctx.say('agent image: cached');
  return { v, image };
}

/** Creates the provider when it does not exist; updates its key only when one was given and differs. */
export async function providerStep(
  client: GatewayClient,
  ctx: StepContext,
  p: NonNullable<OnboardAnswers['provider']>,
  key: string | undefined,
): Promise<void> {
  let existing: ProviderView | null = null;
  try {
    existing = await client.call<ProviderView>('GET', `/v1/providers/${encodeURIComponent(p.name)}`);
  } catch (err) {
    if (!(err instanceof GatewayError) || err.code !== 'PROVIDER_NOT_FOUND') throw err;
  }
  if (existing === null) {
    // A cloud provider without a key would only fail at the agent's first call: stop here instead,
    // with what to do (the answers are saved: --resume continues from this step).
    if (key === undefined && p.credentialEnv !== undefined)
      throw new UsageError(
        `provider ${p.name} needs a key: export ${p.credentialEnv} (or run carapace onboard in a terminal to type it, hidden), then carapace onboard --resume`,
      );
    const baseUrl = p.baseUrl ?? PROVIDER_INFO[p.type as ProviderType].defaultBaseUrl;
    if (baseUrl !== null) await checkProviderAnswers(ctx, p, baseUrl, key);
    await client.call('POST', '/v1/providers', {
      name: p.name,
      type: p.type,
      ...(p.baseUrl !== undefined ? { baseUrl: p.baseUrl } : {}),
      ...(key !== undefined ? { credential: key } : {}),
    });
    ctx.say(
      `provider ${p.name} (${p.type}) created${key !== undefined ? ', its key sealed in the gateway' : ''}`,
    );
    return;
  }
  const { createHash } = await import('node:crypto');
  const fingerprint = key === undefined ? null : `sha256:${createHash('sha256').update(key).digest('hex')}`;
  const patch: Record<string, string> = {};
  if (p.baseUrl !== undefined && p.baseUrl !== existing.baseUrl) patch.baseUrl = p.baseUrl;
  if (
    key !== undefined &&
    existing.fingerprint !== null &&
    !fingerprint!.startsWith(existing.fingerprint) // a view shows a prefix of the sha256
  )
    patch.credential = key;
  if (key !== undefined && existing.fingerprint === null) patch.credential = key;
  if (Object.keys(patch).length === 0) {
    ctx.say(`provider ${p.name}: unchanged`);
    return;
  }
  await checkProviderAnswers(ctx, p, patch.baseUrl ?? existing.baseUrl, patch.credential);
  await client.call('PATCH', `/v1/providers/${encodeURIComponent(p.name)}`, patch);
  ctx.say(`provider ${p.name}: updated (${Object.keys(patch).join(', ').replace('credential', 'key')})`);
}

/** Whether nothing listens on 127.0.0.1:port now (another gateway's forward, a host service). */
function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

/** The blueprint's own port number on the host when it is free, else the next free one. */
async function freeHostPort(port: number, taken: Set<number>): Promise<number> {
  let p = port;
  while (taken.has(p) || !(await portFree(p))) p++;
  return p;
}

/**
 * The sandbox: created from the plan when it does not exist; when it does, started if stopped,
 * given the presets asked for, and its route changed only when the answers name another one.
 */
export async function sandboxStep(
  client: GatewayClient,
  ctx: StepContext,
  answers: OnboardAnswers,
  v: VerifiedBlueprint,
  image: AgentImage,
  asked: { presets: boolean; route: boolean; tier: boolean },
): Promise<SandboxView> {
  const name = answers.name;
  const path = `/v1/sandboxes/${encodeURIComponent(name)}`;
  let existing: SandboxView | null = null;
  try {
    existing = await client.call<SandboxView>('GET', path);
  } catch (err) {
    if (!(err instanceof GatewayError) || err.code !== 'SANDBOX_NOT_FOUND') throw err;
  }
  const route =
    answers.provider === null ? null : { provider: answers.provider.name, model: answers.provider.model };
  if (existing !== null) return updateSandbox(client, ctx, existing, answers, v, route, asked);

  // Host ports: the blueprint's own number unless another of the caller's sandboxes forwards it.
  const all = await client.call<SandboxView[]>('GET', '/v1/sandboxes');
  const taken = new Set(all.flatMap((s) => s.forwards.map((f) => f.hostPort)));
  const hostPorts: Record<number, number> = {};
  for (const p of v.blueprint.forward) {
    hostPorts[p] = await freeHostPort(p, taken);
    taken.add(hostPorts[p]);
  }
  const choices: PlanChoices = {
    sandbox: name,
    route,
    tier: answers.tier,
    presets: answers.presets,
    hostPorts,
    token: randomBytes(24).toString('hex'),
  };
  const b = v.blueprint;
  const baseText = basePolicyText(v);
  const templates: Record<string, string> = {};
  for (const f of b.agent.files) templates[f.source] = readFileSync(join(v.dir, f.source), 'utf8');
  const plan = planSandbox(b, v.digest, baseText, templates, image, choices);

  // The workspace, with the blueprint's config files in it before the agent first starts.
  const workspace = join(ctx.state, 'workspaces', name);
  mkdirSync(workspace, { recursive: true, mode: 0o755 });
  for (const f of plan.files) {
    const rel = f.path.replace(/^\/sandbox\/?/, '');
    if (rel === f.path) continue; // outside the workspace: /tmp files are the agent's to make
    const host = join(workspace, rel);
    mkdirSync(dirname(host), { recursive: true, mode: 0o755 });
    if (existsSync(host)) chmodSync(host, 0o600);
    writeFileSync(host, f.content, { mode: 0o600 });
    chmodSync(host, f.mode);
  }
  const created = await client.call<SandboxView>('POST', '/v1/sandboxes', {
    name,
    command: plan.command,
    policy: plan.policy,
    workspace,
    env: plan.env,
    mounts: plan.mounts,
    forwards: plan.forwards,
    labels: plan.labels,
    restart: plan.restart,
  });
  ctx.say(
    `sandbox ${name} created from ${b.name} ${b.version} (policy: ${answers.tier}${answers.presets.length > 0 ? ` + ${answers.presets.join(', ')}` : ''})`,
  );
  return created;
}

/** The blueprint's base policy, or the built-in default one. */
function basePolicyText(v: VerifiedBlueprint): string {
  return v.blueprint.policy.base !== undefined
    ? readFileSync(join(v.dir, v.blueprint.policy.base), 'utf8')
    : readFileSync(join(builtinPoliciesDir(), 'default.yaml'), 'utf8');
}

async function updateSandbox(
  client: GatewayClient,
  ctx: StepContext,
  existing: SandboxView,
  answers: OnboardAnswers,
  v: VerifiedBlueprint,
  route: { provider: string; model: string } | null,
  asked: { presets: boolean; route: boolean; tier: boolean },
): Promise<SandboxView> {
  const path = `/v1/sandboxes/${encodeURIComponent(existing.name)}`;
  const digest = existing.labels['carapace.blueprint.digest'];
  if (digest !== undefined && digest !== v.digest)
    ctx.say(
      `sandbox ${existing.name} runs blueprint ${existing.labels['carapace.blueprint'] ?? '?'} ${digest}; this Carapace has ${v.digest}. ` +
        `It is left as it is: to move it to the new one, carapace sandbox delete ${existing.name} and onboard again`,
    );
  if (asked.tier) await changeTier(client, ctx, existing.name, answers, v);
  if (asked.presets && answers.presets.length > 0) {
    // Through the gateway's policy update: it edits the latest revision (rules approved since, and
    // presets added before, stay) and applies live; a preset already there changes nothing.
    for (const name of answers.presets) loadBuiltinPreset(name); // one clear line for an unknown name
    const operations = answers.presets.map((name) => ({ op: 'add-preset', preset: { name } }));
    const r = await client.call<{ revision?: number; unchanged?: boolean }>(
      'POST',
      `${path}/policy/operations`,
      {
        operations,
      },
    );
    ctx.say(
      r.unchanged
        ? 'policy: unchanged (the presets were there)'
        : `policy: presets ${answers.presets.join(', ')} added`,
    );
  }
  if (asked.route && route !== null) {
    const current = await client.call<{ routes: { name: string; provider: string; model: string }[] }>(
      'GET',
      `${path}/inference`,
    );
    const now = current.routes.find((r) => r.name === 'default');
    if (now?.provider !== route.provider || now.model !== route.model) {
      await client.call('PUT', `${path}/inference`, {
        inference: { routes: { default: route }, default: 'default', on_unavailable: 'fail' },
      });
      ctx.say(`inference: now ${route.provider} / ${route.model}`);
    }
  }
  if (existing.state !== 'running' && existing.state !== 'creating') {
    await client.call('POST', `${path}/start`, {});
    ctx.say(`sandbox ${existing.name} started`);
  } else {
    ctx.say(`sandbox ${existing.name}: already ${existing.state}`);
  }
  return client.call<SandboxView>('GET', path);
}

/**
 * The tier asked for, applied to the sandbox's network entries through a policy update (live,
 * one audited revision; tier-change.ts says what changes). A blueprint made from another digest
 * is left alone: its entries are not this blueprint's.
 */
async function changeTier(
  client: GatewayClient,
  ctx: StepContext,
  name: string,
  answers: OnboardAnswers,
  v: VerifiedBlueprint,
): Promise<void> {
  const path = `/v1/sandboxes/${encodeURIComponent(name)}/policy`;
  const current = await client.call<{ text?: string }>('GET', path);
  const change = tierChange(
    v.blueprint,
    basePolicyText(v),
    answers.tier,
    answers.presets,
    current.text ?? '',
  );
  const operations = tierOperations(change, answers.tier);
  if (operations.length === 0) {
    ctx.say(`policy tier: ${name} is already ${answers.tier}`);
    return;
  }
  const r = await client.call<{ outcome: string; revision: { rev: number } }>('POST', `${path}/operations`, {
    operations,
  });
  const what = [
    ...Object.keys(change.add).map((k) => `+${k}`),
    ...Object.keys(change.remove).map((k) => `-${k}`),
  ].join(' ');
  ctx.say(
    `policy tier: ${name} is now ${answers.tier} (${what}; revision ${r.revision.rev}, ${r.outcome === 'applied' ? 'applied live, no restart' : `${r.outcome}`})`,
  );
}

export function summary(v: VerifiedBlueprint, sandbox: SandboxView): string {
  const lines = [
    `${sandbox.name} is running ${v.blueprint.name} ${v.blueprint.version}${isBuiltinDigest(v.digest) ? '' : ` (${v.digest})`}.`,
    `  connect:   carapace sandbox connect ${sandbox.name}`,
    `  logs:      carapace sandbox logs ${sandbox.name} -f     (the audit: --audit)`,
    `  policy:    carapace policy get ${sandbox.name}`,
  ];
  for (const f of sandbox.forwards)
    lines.push(`  forwarded: http://127.0.0.1:${f.hostPort}/ → port ${f.sandboxPort} inside`);
  return lines.join('\n') + '\n';
}

export function record(
  ctx: StepContext,
  answers: OnboardAnswers,
  done: OnboardAnswers['done'],
): OnboardAnswers {
  const next = { ...answers, done };
  saveAnswers(ctx.state, next);
  return next;
}
