/** Policy texts an earlier Carapace stored, as this one reads them (src/policy/load/stored-text.ts). */
import { describe, expect, it } from 'vitest';
import { parsePolicy, readStoredPolicyText } from '../../src/policy/index.js';

const NOTE =
  'an inference section without routes (routes: {}), accepted before, is read as no inference ' +
  'section: as then, every model call is refused';
const TOP = `# carapace: ${NOTE}.\n`;

describe('a stored inference section without routes', () => {
  it.each([
    [
      'a block section, every other line as written',
      '# mine\nversion: 1\ninference:\n  routes: {}\n  on_unavailable: fail # why\n  # inside\nlimits: { pids: 64 }\n',
      '# mine\nversion: 1\nlimits: { pids: 64 }\n',
    ],
    [
      'a flow section with a comment on its line',
      'version: 1\ninference: { routes: {} } # none yet\nlisten_ports: [ 80 ]\n',
      'version: 1\nlisten_ports: [ 80 ]\n',
    ],
    ['the last key, without a final newline', 'version: 1\ninference:\n  routes: {}', 'version: 1\n'],
    ['a JSON text (re-rendered)', '{"version": 1, "inference": {"routes": {}}}', '{ "version": 1 }\n'],
  ])('%s: read as no section, said at the top', (_name, stored, read) => {
    expect(parsePolicy(stored, 'stored.yaml').ok).toBe(false); // refused as new input
    const r = readStoredPolicyText(stored);
    expect(r).toEqual({ text: `${TOP}${read}`, notes: [NOTE] });
    const parsed = parsePolicy(r.text, 'stored.yaml');
    expect(parsed.ok && parsed.policy.inference).toBe(undefined);
    // Read again (a revision made from it keeps the comment), nothing more changes.
    expect(readStoredPolicyText(r.text)).toEqual({ text: r.text, notes: [] });
  });

  it.each([
    ['a section with routes', 'version: 1\ninference:\n  routes:\n    a: { provider: p, model: m }\n'],
    ['the form in a comment', 'version: 1\n# inference: { routes: {} }\n'],
    ['an empty routes map elsewhere', 'version: 1\nx_notes: { routes: {} }\n'],
    ['a text that does not parse', 'version: 1\ninference: { routes: {}\n'],
  ])('%s: the text as stored', (_name, stored) => {
    expect(readStoredPolicyText(stored)).toEqual({ text: stored, notes: [] });
  });
});
