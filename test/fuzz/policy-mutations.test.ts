/**
 * The policy loader against mutations of every policy, preset and fixture the project has, plus
 * hostile YAML (alias bombs, deep nesting). Fixed seed: input N is the same on every run, so a
 * failure names its index and reproduces. The test timeout is the only time bound.
 */
import { describe, expect, it } from 'vitest';
import { parsePolicy } from '../../src/policy/index.js';
import { watchWarnings, fuzz, HOSTILE, judge, mutate, seedCorpus } from './policy-fuzz.js';

const SEED = 0x5eed_0005;
const INPUTS = 8_000;

describe('policy loader fuzz: mutations of the seed corpus', () => {
  const corpus = seedCorpus();

  it('has a seed corpus: the compat files, built-in policies and presets, fixtures', () => {
    expect(corpus.length).toBeGreaterThanOrEqual(30);
    for (const { file, text } of corpus)
      expect({ file, problem: judge(text).problem }).toEqual({ file, problem: null });
  });

  it('hostile YAML: rejected with positions or accepted, never a crash or a hang', () => {
    for (const text of HOSTILE)
      expect({ text: text.slice(0, 80), problem: judge(text).problem }).toMatchObject({ problem: null });
  });

  // Found by this fuzzer: the loader threw (a ReferenceError, no position) on the first two, and
  // the yaml package printed process warnings on stderr for the third.
  it.each([
    [
      'an alias with no anchor',
      'version: 1\nfilesystem_policy:\n  read_only: [*usr]\n',
      3,
      15,
      /unknown alias \*usr/,
    ],
    ['an alias bomb', HOSTILE[0]!, 2, 8, /aliases \(\*a and others\) expand to too much data/],
    ['a list as a key', 'version: 1\n[/usr, /tmp]: 1\n', 2, 1, /a list or a map is used as a key/],
  ])('regression: %s is a positioned diagnostic', async (_what, text, line, col, message) => {
    const warnings = watchWarnings();
    const r = parsePolicy(text, 'regression.yaml');
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.diagnostics[0]).toMatchObject({ line, col, message: expect.stringMatching(message) });
    expect(await warnings.stop()).toEqual([]);
  });

  it(`${INPUTS} mutated inputs: only acceptance or positioned diagnostics`, async () => {
    const warnings = watchWarnings();
    const texts = corpus.map((c) => c.text);
    const report = fuzz(SEED, INPUTS, (rng) => mutate(rng, texts));
    console.log(
      `policy mutations: ${report.inputs} inputs, ${report.accepted} accepted, ${report.rejected} rejected`,
    );
    expect(report.failures).toEqual([]);
    expect(report.inputs).toBe(INPUTS);
    // A fuzzer whose inputs all fail (or all pass) would test little: both outcomes must be common.
    expect(report.accepted).toBeGreaterThan(INPUTS / 20);
    expect(report.rejected).toBeGreaterThan(INPUTS / 4);
    expect(await warnings.stop()).toEqual([]);
  }, 120_000);
});
