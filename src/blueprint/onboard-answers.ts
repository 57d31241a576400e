/**
 * What `carapace onboard` was told, kept per sandbox in `<state>/onboard/<name>.json` so that
 * `--resume` can finish an interrupted onboarding without asking again, and a rerun knows what it
 * set up. Never a secret: the key goes to the gateway (sealed there); only the name of the
 * environment variable it came from is kept.
 */
import { mkdirSync, readdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { TIERS } from './sandbox-plan.js';

export const AnswersSchema = z.object({
  name: z.string(),
  agent: z.string(),
  provider: z
    .object({
      name: z.string(),
      type: z.string(),
      baseUrl: z.string().optional(),
      model: z.string(),
      credentialEnv: z.string().optional(),
    })
    .nullable(),
  tier: z.enum(TIERS),
  presets: z.array(z.string()),
  /** The last step that completed (for --resume and for the summary). */
  done: z.enum(['none', 'blueprint', 'provider', 'sandbox', 'healthy']),
  updatedAt: z.string(),
});
export type OnboardAnswers = z.infer<typeof AnswersSchema>;

function dir(state: string): string {
  return join(state, 'onboard');
}

export function saveAnswers(state: string, a: OnboardAnswers): void {
  mkdirSync(dir(state), { recursive: true, mode: 0o700 });
  const file = join(dir(state), `${a.name}.json`);
  const tmp = `${file}.tmp`;
  writeFileSync(tmp, JSON.stringify({ ...a, updatedAt: new Date().toISOString() }, null, 2) + '\n', {
    mode: 0o600,
  });
  renameSync(tmp, file);
}

export function loadAnswers(state: string, name: string): OnboardAnswers | null {
  try {
    return AnswersSchema.parse(JSON.parse(readFileSync(join(dir(state), `${name}.json`), 'utf8')));
  } catch {
    return null;
  }
}

/** The answers of the onboarding touched last (what a bare `--resume` continues). */
export function latestAnswers(state: string): OnboardAnswers | null {
  let names: string[];
  try {
    names = readdirSync(dir(state)).filter((n) => n.endsWith('.json'));
  } catch {
    return null;
  }
  const newest = names
    .map((n) => ({ n, t: statSync(join(dir(state), n)).mtimeMs }))
    .sort((a, b) => b.t - a.t)[0];
  return newest === undefined ? null : loadAnswers(state, newest.n.replace(/\.json$/, ''));
}
