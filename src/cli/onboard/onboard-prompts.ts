/**
 * onboard's questions in a terminal (@clack/prompts). Every answer has a default taken from what
 * was saved or detected, so pressing Enter through it reproduces the last onboarding. The key is
 * asked for hidden (a password prompt), only when its variable is not set, and never echoed.
 */
import * as p from '@clack/prompts';
import { builtinBlueprintNames, DEFAULT_AGENT } from '../../blueprint/catalog.js';
import type { OnboardAnswers } from '../../blueprint/onboard-answers.js';
import { TIERS, type Tier } from '../../blueprint/sandbox-plan.js';
import { listPresets } from '../../policy/index.js';
import { UsageError } from '../errors.js';

interface Given {
  agent?: string | undefined;
  name?: string | undefined;
  provider?: string | undefined;
  providerName?: string | undefined;
  providerUrl?: string | undefined;
  model?: string | undefined;
  credentialEnv?: string | undefined;
  tier?: string | undefined;
  preset: string[];
}

interface Helpers {
  keyVariables: Record<string, string>;
  localTypes: Set<string>;
  probeLocal(port: number, path: string): Promise<string[] | null>;
  /** Whether the agent talks to a model at all (the shell does not: no model questions). */
  usesModel(agent: string): boolean;
}

function answered<T>(value: T | symbol): Exclude<T, symbol> {
  if (typeof value === 'symbol' || p.isCancel(value)) {
    // The frame is closed without a message of its own: the one line is the error's, printed by
    // the CLI as every error is (clack's cancel line and the error's both said "cancelled").
    // The questions come before any step, so nothing was made or saved yet.
    p.cancel('');
    throw new UsageError('onboarding cancelled; nothing was changed', 130);
  }
  return value as Exclude<T, symbol>;
}

export async function askAnswers(
  o: Given,
  saved: OnboardAnswers | null,
  h: Helpers,
): Promise<{ answers: OnboardAnswers; key: string | undefined }> {
  p.intro('carapace onboard');
  const agent =
    o.agent ??
    answered(
      await p.select({
        message: 'Which agent?',
        initialValue: saved?.agent ?? DEFAULT_AGENT,
        options: builtinBlueprintNames().map((n) => ({ value: n, label: n })),
      }),
    );
  const name =
    o.name ??
    answered(
      await p.text({
        message: 'Name of the sandbox',
        initialValue: saved?.name ?? agent,
        validate: (v) =>
          /^[a-z0-9][a-z0-9_.-]{0,62}$/.test(v ?? '')
            ? undefined
            : 'lower case letters, digits, ".", "_", "-"',
      }),
    );

  // An agent without a model (the shell) gets no model questions, unless --provider asked for one
  // (a shell can still reach inference.local with curl).
  const { provider, key } =
    o.provider === undefined && !h.usesModel(agent)
      ? { provider: null, key: undefined }
      : await askProvider(o, saved, h);
  const tier =
    (o.tier as Tier | undefined) ??
    answered(
      await p.select({
        message: 'Policy tier',
        initialValue: saved?.tier ?? 'balanced',
        options: TIERS.map((t) => ({
          value: t,
          label: t,
          hint:
            t === 'restricted'
              ? 'its model and nothing else'
              : t === 'balanced'
                ? 'what the blueprint needs'
                : 'plus npm, PyPI, Hugging Face',
        })),
      }),
    );
  const presets =
    o.preset.length > 0
      ? o.preset
      : answered(
          await p.multiselect({
            message: 'Extra presets (space to choose, Enter to go on)',
            required: false,
            initialValues: saved?.presets ?? [],
            options: listPresets().map((s) => ({ value: s.name, label: s.name, hint: s.description })),
          }),
        );
  p.outro(`Setting up ${name}`);
  return {
    answers: {
      name,
      agent,
      provider,
      tier,
      presets,
      done: saved?.done ?? 'none',
      updatedAt: new Date().toISOString(),
    },
    key,
  };
}

/** Where the agent's model calls go: local servers detected first, then the cloud APIs, or none. */
async function askProvider(
  o: Given,
  saved: OnboardAnswers | null,
  h: Helpers,
): Promise<{ provider: OnboardAnswers['provider']; key: string | undefined }> {
  const spin = p.spinner();
  spin.start('Looking for model servers on this host (Ollama on 11434, vLLM on 8000)');
  const [ollama, vllm] = await Promise.all([
    h.probeLocal(11434, '/api/tags'),
    h.probeLocal(8000, '/v1/models'),
  ]);
  spin.stop(
    `Local model servers: ${[ollama !== null ? 'Ollama' : '', vllm !== null ? 'vLLM' : ''].filter((x) => x).join(', ') || 'none found'}`,
  );
  const options = [
    ...(ollama !== null
      ? [{ value: 'ollama', label: 'Ollama on this host', hint: 'prompts never leave it' }]
      : []),
    ...(vllm !== null ? [{ value: 'vllm', label: 'vLLM on this host', hint: 'prompts never leave it' }] : []),
    { value: 'openai', label: 'OpenAI' },
    { value: 'anthropic', label: 'Anthropic' },
    { value: 'nvidia', label: 'NVIDIA' },
    { value: 'openai-compatible', label: 'Another OpenAI-compatible API (its URL)' },
    { value: 'none', label: 'No model for now' },
  ];
  const type =
    o.provider ??
    answered(
      await p.select({
        message: 'Where do its model calls go?',
        initialValue: saved?.provider?.type ?? options[0]!.value,
        options,
      }),
    );
  if (type === 'none') return { provider: null, key: undefined };
  let key: string | undefined;
  const local = type === 'ollama' ? ollama : type === 'vllm' ? vllm : null;
  const baseUrl =
    o.providerUrl ??
    (type === 'ollama' && ollama !== null
      ? 'http://127.0.0.1:11434/v1'
      : type === 'vllm' && vllm !== null
        ? 'http://127.0.0.1:8000/v1'
        : type === 'openai-compatible'
          ? answered(
              await p.text({
                message: 'Base URL of the API',
                placeholder: 'https://llm.example.com/v1',
                initialValue: saved?.provider?.baseUrl ?? '',
              }),
            )
          : undefined);
  const model =
    o.model ??
    (local !== null && local.length > 0
      ? answered(
          await p.select({ message: 'Which model?', options: local.map((m) => ({ value: m, label: m })) }),
        )
      : answered(
          await p.text({
            message: 'Which model?',
            initialValue: saved?.provider?.model ?? '',
            validate: (v) => ((v ?? '') === '' ? 'a model name' : undefined),
          }),
        ));
  let credentialEnv: string | undefined;
  if (!h.localTypes.has(type)) {
    credentialEnv = o.credentialEnv ?? h.keyVariables[type] ?? 'OPENAI_API_KEY';
    if (process.env[credentialEnv]) {
      p.log.info(`Using the key in $${credentialEnv}`);
      key = process.env[credentialEnv];
    } else {
      const typed = answered(
        await p.password({
          message: `API key (${credentialEnv} is not set; typed hidden, sealed in the gateway, empty to keep a stored one)`,
        }),
      );
      key = typed === '' ? undefined : typed;
    }
  }
  const provider = {
    name: o.providerName ?? saved?.provider?.name ?? type,
    type,
    ...(baseUrl !== undefined && baseUrl !== '' ? { baseUrl } : {}),
    model,
    ...(credentialEnv !== undefined ? { credentialEnv } : {}),
  };
  return { provider, key };
}
