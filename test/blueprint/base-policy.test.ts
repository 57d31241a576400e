/**
 * A built-in blueprint's base policy says in its header what it does, and what onboard makes of
 * it. The openclaw one pointed to an `inference` section "below" that it does not have (onboard
 * writes one, with none of policies/openclaw.yaml's privacy rules), and named its network entries
 * without saying which tier keeps them.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { loadBlueprintManifest } from '../../src/blueprint/manifest.js';
import { composePolicy, type PlanChoices, type Tier } from '../../src/blueprint/sandbox-plan.js';
import { REPO } from '../helpers/cli.js';

const DIR = join(REPO, 'blueprints');

/** The leading comment block, without the `#`s, joined into one text. */
function header(text: string): string {
  const lines: string[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('#')) break;
    lines.push(line.replace(/^# ?/, ''));
  }
  return lines.join(' ');
}

function choices(tier: Tier): PlanChoices {
  return {
    sandbox: 'box',
    route: { provider: 'openai', model: 'gpt-4.1' },
    tier,
    presets: [],
    hostPorts: {},
    token: 'x',
  };
}

describe('a built-in blueprint’s base policy header', () => {
  for (const name of readdirSync(DIR)) {
    it(`${name}: a section it points to is there, and it names each network entry`, () => {
      const text = readFileSync(join(DIR, name, 'policy.yaml'), 'utf8');
      const head = header(text);
      const doc = parse(text) as Record<string, unknown>;
      for (const [, key] of head.matchAll(/see `([a-z_]+)` below/g)) expect(Object.keys(doc)).toContain(key);
      for (const entry of Object.keys((doc.network_policies as Record<string, unknown> | null) ?? {}))
        expect(head).toContain(`\`${entry}\``);
    });
  }

  it('openclaw: what it says of onboard’s inference section and of the tiers is what onboard does', () => {
    const dir = join(DIR, 'openclaw');
    const text = readFileSync(join(dir, 'policy.yaml'), 'utf8');
    const head = header(text);
    const { blueprint } = loadBlueprintManifest(dir);
    const plan = (tier: Tier) =>
      parse(composePolicy(blueprint, text, choices(tier))) as Record<string, unknown>;
    const entries = (tier: Tier) => Object.keys(plan(tier).network_policies as Record<string, unknown>);

    expect((parse(text) as Record<string, unknown>).inference).toBeUndefined();
    expect(head).toContain('without its `inference` section');
    // Onboard's section: one route, `default`, failing closed, no privacy rules.
    expect(plan('balanced').inference).toEqual({
      routes: { default: { provider: 'openai', model: 'gpt-4.1' } },
      default: 'default',
      on_unavailable: 'fail',
    });
    expect(head).toMatch(/one route, `default`, failing closed .*no privacy rules/);
    // The entries it names are the balanced tier's; restricted has none; open adds presets.
    expect(head).toContain("at onboard's `balanced` tier");
    expect(entries('balanced')).toEqual(
      Object.keys((parse(text) as { network_policies: object }).network_policies),
    );
    expect(entries('restricted')).toEqual([]);
    expect(head).toContain('`restricted` keeps none of them');
    const added = entries('open').filter((e) => !entries('balanced').includes(e));
    expect(added.length).toBeGreaterThan(0);
    expect(head).toContain('`open` adds the `npm`, `pypi` and `huggingface` presets');
  });
});
