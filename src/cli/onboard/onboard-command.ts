/**
 * `carapace onboard`: from a bare host to a running, healthy agent in one command
 * (docs/onboard.md). Interactive in a terminal (@clack/prompts); `--non-interactive` (or no
 * terminal) takes flags and CARAPACE_ONBOARD_* variables instead. `--resume` finishes an
 * interrupted onboarding with the answers it saved. Safe to rerun: what exists is kept, and only
 * what the command line asks for changes (onboard-steps.ts).
 *
 * A provider's key comes from an environment variable (`--credential-env VAR`, or the provider
 * type's usual one) or a hidden prompt; never from argv, which every process of the host can read.
 */
import type { Command } from 'commander';
import { request } from 'node:http';
import { loadBuiltinPreset, PROVIDER_TYPES } from '../../policy/index.js';
import { stateDirs } from '../../sandbox/state-dirs.js';
import { builtinBlueprintNames, DEFAULT_AGENT, usesModel } from '../../blueprint/catalog.js';
import { latestAnswers, loadAnswers, type OnboardAnswers } from '../../blueprint/onboard-answers.js';
import { TIERS, type Tier } from '../../blueprint/sandbox-plan.js';
import { blueprintStore, trustSettings } from '../blueprint/blueprint-command.js';
import { UsageError } from '../errors.js';
import { say } from '../say.js';
import { GatewayClient } from '../gateway/gateway-client.js';
import { healthStep } from './onboard-health.js';
import {
  blueprintStep,
  providerStep,
  record,
  sandboxStep,
  summary,
  type StepContext,
} from './onboard-steps.js';

interface OnboardOptions {
  nonInteractive?: boolean;
  resume?: boolean;
  agent?: string;
  name?: string;
  provider?: string;
  providerName?: string;
  providerUrl?: string;
  model?: string;
  credentialEnv?: string;
  tier?: string;
  preset: string[];
  upstreamCa?: string;
  trustedKeys?: string;
}

/** The key variable of each provider type, read when --credential-env names none. */
const KEY_VARIABLES: Record<string, string> = {
  openai: 'OPENAI_API_KEY',
  anthropic: 'ANTHROPIC_API_KEY',
  nvidia: 'NVIDIA_API_KEY',
  'openai-compatible': 'OPENAI_API_KEY',
};
const LOCAL_TYPES = new Set(['ollama', 'vllm']);

/** Flags, then CARAPACE_ONBOARD_* variables (for scripts and CI that cannot pass flags). */
function fromEnv(o: OnboardOptions, env: NodeJS.ProcessEnv): OnboardOptions {
  const pick = (flag: string | undefined, name: string) =>
    flag ?? (env[`CARAPACE_ONBOARD_${name}`] || undefined);
  return {
    ...o,
    agent: pick(o.agent, 'AGENT'),
    name: pick(o.name, 'NAME'),
    provider: pick(o.provider, 'PROVIDER'),
    providerUrl: pick(o.providerUrl, 'PROVIDER_URL'),
    model: pick(o.model, 'MODEL'),
    credentialEnv: pick(o.credentialEnv, 'CREDENTIAL_ENV'),
    tier: pick(o.tier, 'TIER'),
    preset:
      o.preset.length > 0
        ? o.preset
        : (env.CARAPACE_ONBOARD_PRESETS ?? '').split(',').filter((p) => p !== ''),
  };
}

function checkAnswers(o: OnboardOptions): void {
  if (
    o.provider !== undefined &&
    o.provider !== 'none' &&
    !(PROVIDER_TYPES as readonly string[]).includes(o.provider)
  )
    throw new UsageError(`--provider ${o.provider}: expected one of ${PROVIDER_TYPES.join(', ')}, or none`);
  if (o.tier !== undefined && !(TIERS as readonly string[]).includes(o.tier))
    throw new UsageError(`--tier ${o.tier}: expected one of ${TIERS.join(', ')}`);
  if (o.name !== undefined && !/^[a-z0-9][a-z0-9_.-]{0,62}$/.test(o.name))
    throw new UsageError(`--name ${o.name}: lower case letters, digits, ".", "_" and "-", up to 63`);
  if (o.credentialEnv !== undefined && !/^[A-Za-z_][A-Za-z0-9_]*$/.test(o.credentialEnv))
    throw new UsageError(`--credential-env ${o.credentialEnv}: expected the name of an environment variable`);
  // Before anything is made or saved: a mistyped name saved as the latest answers would be what a
  // bare rerun (install.sh again) redoes.
  for (const name of o.preset) loadBuiltinPreset(name);
}

/** The answers for a run without prompts: from flags and environment, else what was saved. */
function nonInteractiveAnswers(o: OnboardOptions, saved: OnboardAnswers | null): OnboardAnswers {
  // The answers a person at the prompts would get by accepting each default.
  const agent = o.agent ?? saved?.agent ?? DEFAULT_AGENT;
  const type = o.provider ?? saved?.provider?.type ?? 'none';
  let provider: OnboardAnswers['provider'] = null;
  if (type !== 'none') {
    const model = o.model ?? (o.provider === undefined ? saved?.provider?.model : undefined);
    if (model === undefined)
      throw new UsageError(`--model is required with --provider ${type} (the model the agent's calls go to)`);
    provider = {
      name: o.providerName ?? (o.provider === undefined ? saved?.provider?.name : undefined) ?? type,
      type,
      ...(o.providerUrl !== undefined
        ? { baseUrl: o.providerUrl }
        : saved?.provider?.baseUrl !== undefined
          ? { baseUrl: saved.provider.baseUrl }
          : {}),
      model,
      ...(() => {
        const v = o.credentialEnv ?? saved?.provider?.credentialEnv ?? KEY_VARIABLES[type];
        return v !== undefined && !LOCAL_TYPES.has(type) ? { credentialEnv: v } : {};
      })(),
    };
  }
  return {
    name: o.name ?? saved?.name ?? defaultName(agent),
    agent,
    provider,
    tier: (o.tier as Tier | undefined) ?? saved?.tier ?? 'balanced',
    presets: [...new Set([...(saved?.presets ?? []), ...o.preset])],
    done: saved?.done ?? 'none',
    updatedAt: new Date().toISOString(),
  };
}

/** A sandbox name from a blueprint reference: `openclaw`, `./agents/my-agent` → `my-agent`. */
function defaultName(agent: string): string {
  return (
    agent
      .replace(/\/+$/, '')
      .replace(/.*\//, '')
      .toLowerCase()
      .replace(/[^a-z0-9_.-]/g, '-')
      .replace(/^[^a-z0-9]+/, '') || 'agent'
  );
}

/** The key: from its variable; a missing one is an error only when the provider must be created. */
function keyFromEnv(p: OnboardAnswers['provider'], env: NodeJS.ProcessEnv): string | undefined {
  if (p?.credentialEnv === undefined) return undefined;
  const v = env[p.credentialEnv];
  return v === undefined || v === '' ? undefined : v;
}

/** A local model server answering on the host's loopback (Ollama, vLLM), and its models. */
export function probeLocal(port: number, path: string): Promise<string[] | null> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path, timeout: 1500 }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => {
        try {
          const j = JSON.parse(body) as { models?: { name: string }[]; data?: { id: string }[] };
          resolve(j.models?.map((m) => m.name) ?? j.data?.map((m) => m.id) ?? []);
        } catch {
          resolve(null);
        }
      });
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(null));
    req.end();
  });
}

async function onboard(raw: OnboardOptions): Promise<void> {
  const o = fromEnv(raw, process.env);
  checkAnswers(o);
  const state = stateDirs().state;
  const interactive = !o.nonInteractive && process.stdin.isTTY === true && process.stdout.isTTY === true;
  // The answers saved for this sandbox: named, or the agent's default name, or (--resume alone,
  // or no terminal and nothing named) the onboarding touched last — so that install.sh run again
  // without a terminal redoes the user's onboarding, not the default agent's.
  const nameGuess = o.name ?? (o.agent !== undefined ? defaultName(o.agent) : undefined);
  const saved =
    nameGuess !== undefined
      ? loadAnswers(state, nameGuess)
      : o.resume || !interactive
        ? latestAnswers(state)
        : null;
  if (o.resume && saved === null)
    throw new UsageError('--resume: no onboarding to resume (run carapace onboard first)');

  const { preflight } = await import('./onboard-preflight.js');
  const store = blueprintStore();
  const trust = trustSettings(o);
  let answers: OnboardAnswers;
  let key: string | undefined;
  if (interactive && !o.resume) {
    const { askAnswers } = await import('./onboard-prompts.js');
    const asked = await askAnswers(o, saved, {
      keyVariables: KEY_VARIABLES,
      localTypes: LOCAL_TYPES,
      probeLocal,
      usesModel: (agent) => usesModel(agent, store, trust),
    });
    answers = asked.answers;
    key = asked.key;
  } else {
    answers = nonInteractiveAnswers(o, saved);
    key = keyFromEnv(answers.provider, process.env);
  }
  const ctx: StepContext = {
    state,
    store,
    trust,
    upstreamCa: o.upstreamCa,
    say,
  };
  // A blueprint that is not there is said before anything else is checked or started.
  const { locateBlueprint } = await import('../../blueprint/catalog.js');
  locateBlueprint(answers.agent, store);
  preflight(state, say);
  const client = await GatewayClient.connect({ start: true });
  const { v, image } = await blueprintStep(ctx, answers);
  answers = record(ctx, answers, answers.done === 'none' ? 'blueprint' : answers.done);
  if (answers.provider !== null) {
    await providerStep(client, ctx, answers.provider, key);
    answers = record(ctx, answers, 'provider');
  }
  const sandbox = await sandboxStep(client, ctx, answers, v, image, {
    // What this run asks to change on a sandbox that exists: flags given, or answers (typed at
    // the prompts) that differ from the saved ones. Nothing else is touched.
    presets:
      raw.preset.length > 0 || (saved !== null && answers.presets.some((p) => !saved.presets.includes(p))),
    route:
      raw.provider !== undefined ||
      raw.model !== undefined ||
      (saved !== null &&
        (answers.provider?.name !== saved.provider?.name ||
          answers.provider?.model !== saved.provider?.model)),
    // A tier named on the command line (or chosen at the prompt unlike the saved one) is applied:
    // a sandbox already on it is left as it is (tier-change.ts).
    tier: raw.tier !== undefined || (saved !== null && answers.tier !== saved.tier),
  });
  answers = record(ctx, answers, 'sandbox');
  await healthStep(client, ctx, v, image, sandbox);
  record(ctx, answers, 'healthy');
  process.stdout.write(summary(v, sandbox));
}

const collect = (value: string, previous: string[]) => [...previous, value];

export function registerOnboard(program: Command): void {
  program
    .command('onboard')
    .description(
      'set up a sandboxed agent from a blueprint: preflight, gateway, agent, model, policy, start, health',
    )
    .option(
      '--non-interactive',
      'never prompt: the answers from flags and CARAPACE_ONBOARD_* variables, else the defaults',
    )
    .option('--resume', 'finish the last (or --name) onboarding with its saved answers')
    .option(
      '--agent <blueprint>',
      `the agent: ${builtinBlueprintNames().join(', ')}, an installed blueprint, or a directory (default: ${DEFAULT_AGENT})`,
    )
    .option('--name <sandbox>', 'the sandbox name (default: the agent name)')
    .option('--provider <type>', `the model provider: ${PROVIDER_TYPES.join(', ')}, or none`)
    .option('--provider-name <name>', 'the stored provider to create or reuse (default: the type)')
    .option('--provider-url <url>', "the provider API's base URL (default: the type's)")
    .option('--model <name>', 'the model the agent talks to')
    .option(
      '--credential-env <var>',
      "the environment variable holding the provider's key (default: the type's, e.g. OPENAI_API_KEY)",
    )
    .option('--tier <tier>', `policy tier: ${TIERS.join(', ')} (default balanced)`)
    .option('--preset <name>', 'a policy preset to add (repeatable)', collect, [])
    .option('--upstream-ca <file>', "extra CAs for the registry's TLS while installing the agent image")
    .option('--trusted-keys <file>', 'trusted blueprint signing keys (default: <state>/trusted-keys)')
    .action((o: OnboardOptions) => onboard(o));
}
