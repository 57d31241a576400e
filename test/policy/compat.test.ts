/** The policies and presets people already have must validate unchanged. */
import { readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parsePolicyOrPreset } from '../../src/policy/index.js';
import { COMPAT, yamlFiles } from './helpers.js';

/** Every problem, and every warning: a file people already have must draw neither. */
function validate(file: string): string[] {
  const r = parsePolicyOrPreset(readFileSync(file, 'utf8'), file);
  return (r.ok ? r.warnings : r.diagnostics).map((d) => `${d.line}:${d.col}: ${d.message}`);
}

describe('compat fixtures validate unchanged', () => {
  it('NemoClaw openclaw-sandbox.yaml', () => {
    expect(validate(join(COMPAT, 'nemoclaw', 'openclaw-sandbox.yaml'))).toEqual([]);
  });

  for (const file of yamlFiles(join(COMPAT, 'nemoclaw', 'presets'))) {
    it(`NemoClaw preset ${basename(file)}`, () => {
      const r = parsePolicyOrPreset(readFileSync(file, 'utf8'), file);
      expect(r.ok ? r.kind : r.diagnostics).toBe('preset');
      expect(validate(file)).toEqual([]);
    });
  }

  for (const file of yamlFiles(join(COMPAT, 'openshell'))) {
    it(`OpenShell ${basename(file)}`, () => {
      expect(validate(file)).toEqual([]);
    });
  }
});
