/**
 * `carapace inference set`'s command line (src/cli/models/inference-command.ts), in process: the section
 * a set of flags or a `--from` file describes, and the one line a user gets for a bad one. A
 * `--from` file's problems are reported at their place in that file (not in the sandbox's policy,
 * which the user never sees), and flags that `--from` or `--clear` would ignore are refused.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { sectionFromFlags } from '../../src/cli/models/inference-command.js';
import { formatDiagnostic, parsePolicy } from '../../src/policy/index.js';
import { readCredential } from '../../src/cli/models/provider-command.js';
import { UsageError } from '../../src/cli/errors.js';

const dir = mkdtempSync(join(tmpdir(), 'carapace-inference-set-'));
const file = (name: string, text: string): string => {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
};
const flags = (o: Record<string, unknown> = {}) => ({
  route: [],
  local: [],
  alias: [],
  fallback: [],
  timeout: [],
  idleTimeout: [],
  ...o,
});

/** The one line `sectionFromFlags` refuses with (a UsageError), or a failure. */
function refusal(current: Record<string, unknown> | null, o: Record<string, unknown>): string {
  try {
    sectionFromFlags(current, flags(o));
  } catch (err) {
    expect(err).toBeInstanceOf(UsageError);
    const message = (err as Error).message;
    expect(message.split('\n')).toHaveLength(1);
    return message;
  }
  throw new Error('not refused');
}

describe('inference set --from', () => {
  it('reads a bare section or a policy holding one', () => {
    const bare = file('bare.yaml', 'routes:\n  a: { provider: one, model: m }\n');
    expect(sectionFromFlags(null, flags({ from: bare }))).toEqual({
      routes: { a: { provider: 'one', model: 'm' } },
    });
    const policy = file(
      'policy.yaml',
      'version: 1\ninference:\n  routes:\n    b: { provider: two, model: n }\n',
    );
    expect(sectionFromFlags(null, flags({ from: policy }))).toEqual({
      routes: { b: { provider: 'two', model: 'n' } },
    });
  });

  it("reports a bad section at its line in the user's file", () => {
    const negative = file(
      'negative.yaml',
      '# my routes\nroutes:\n  a: { provider: one, model: m }\nbudget: { requests_per_hour: -5 }\n',
    );
    expect(refusal(null, { from: negative })).toBe(
      `${negative}:4:30: "requests_per_hour" must be at least 0, not -5`,
    );
    const inPolicy = file(
      'in-policy.yaml',
      'version: 1\ninference:\n  routes:\n    a: { provider: one, model: m, colour: red }\n',
    );
    expect(refusal(null, { from: inPolicy })).toMatch(
      new RegExp(`^${inPolicy}:4:35: unknown key "colour" in inference route "a"`),
    );
    const badYaml = file('bad.yaml', 'routes: [\n');
    expect(refusal(null, { from: badYaml })).toMatch(new RegExp(`^${badYaml}:\\d+:\\d+: \\S`));
    expect(refusal(null, { from: badYaml })).not.toMatch(/BAD_INDENT$/);
    expect(refusal(null, { from: join(dir, 'missing.yaml') })).toBe(
      `--from ${join(dir, 'missing.yaml')}: no such file`,
    );
    const empty = file('empty.yaml', 'version: 1\n');
    expect(refusal(null, { from: empty })).toMatch(/no inference section/);
  });

  it('refuses a section without routes (every model call would be refused), at its line', () => {
    const why =
      'the inference section has no routes: every model call would be refused; ' +
      'add a route (NAME: { provider: PROVIDER, model: MODEL }) or remove the inference section';
    const bare = file('no-routes.yaml', 'routes: {}\n');
    expect(refusal(null, { from: bare })).toBe(`${bare}:1:9: ${why}`);
    const inPolicy = file('no-routes-policy.yaml', 'version: 1\ninference:\n  routes: {}\n  default: a\n');
    expect(refusal(null, { from: inPolicy })).toBe(`${inPolicy}:3:11: ${why} (and 1 more)`);
    // The same for a whole policy (carapace run --policy, policy set, sandbox create).
    const policy = parsePolicy('version: 1\ninference:\n  routes: {}\n', 'agent.yaml');
    expect(policy.ok ? [] : policy.diagnostics.map(formatDiagnostic)).toEqual([`agent.yaml:3:11: ${why}`]);
  });

  it('refuses flags that --from or --clear would silently ignore', () => {
    const bare = file('ok.yaml', 'routes:\n  a: { provider: one, model: m }\n');
    expect(refusal(null, { from: bare, route: ['x=one/y'] })).toMatch(
      /--from replaces the whole section: .*--route/,
    );
    expect(refusal(null, { from: bare, default: 'a' })).toMatch(/--default/);
    expect(refusal(null, { clear: true, local: ['a'] })).toMatch(/--clear removes the section: .*--local/);
    expect(refusal(null, { clear: true, from: bare })).toMatch(/--clear .*--from/);
  });
});

describe('inference set without anything to set', () => {
  it('is refused, not a silent success that changed nothing', () => {
    const current = { routes: { a: { provider: 'one', model: 'm' } } };
    expect(refusal(current, {})).toBe(
      'nothing to set: give --route NAME=PROVIDER/MODEL (repeatable), --default, --local, --alias, --fallback, --timeout, --idle-timeout, --from FILE or --clear (carapace inference get shows the routes)',
    );
    expect(refusal(null, {})).toMatch(/^nothing to set: give --route/);
    // One piece on the current routes is something to set.
    expect(sectionFromFlags(current, flags({ default: 'a' }))).toMatchObject({ default: 'a' });
  });
});

describe('provider create --credential-env', () => {
  it('never echoes what was given in place of a variable name (it is most likely the key)', async () => {
    const key = 'sk-proj-pasted-in-by-mistake-0123456789';
    let message = '';
    try {
      await readCredential({ credentialEnv: key });
    } catch (err) {
      expect(err).toBeInstanceOf(UsageError);
      message = (err as Error).message;
    }
    expect(message).toMatch(/--credential-env: expected the name of an environment variable/);
    expect(message).not.toContain(key);
    expect(message.split('\n')).toHaveLength(1);
  });
});
