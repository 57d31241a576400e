/**
 * The policy loader against random YAML documents shaped like policies: the schema's own keys and
 * values, nested at random, in block and flow style. Fixed seed, as in policy-mutations.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { watchWarnings, fuzz, generate } from './policy-fuzz.js';

const SEED = 0x5eed_0006;
const INPUTS = 4_000;

describe('policy loader fuzz: generated documents', () => {
  it(`${INPUTS} generated documents: only acceptance or positioned diagnostics`, async () => {
    const warnings = watchWarnings();
    const report = fuzz(SEED, INPUTS, generate);
    console.log(
      `policy generated: ${report.inputs} inputs, ${report.accepted} accepted, ${report.rejected} rejected`,
    );
    expect(report.failures).toEqual([]);
    expect(report.inputs).toBe(INPUTS);
    expect(report.rejected).toBeGreaterThan(INPUTS / 2);
    expect(await warnings.stop()).toEqual([]);
  }, 120_000);
});
