/**
 * Every view of Carapace's shows what a sandbox chose by one rule (src/policy/printable.ts): the
 * CLI's tables, its JSON output (`sandbox logs --audit`, `-o json`) and `carapace term`'s panels.
 * They used to differ: tables escaped C0 and C1 only, `term` turned them into `?`, and neither
 * touched the bidi overrides and zero-width characters that make one line read as another (a
 * host `evil.test` shown as `tset.live`, a proposal's rationale hiding a word), nor did the JSON
 * the CLI printed, which the audit file does escape.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { decisionLine, fit, proposalDetail, type Decision } from '../src/cli/operator/term/model.js';
import type { ProposalView } from '../src/cli/operator/rules-command.js';
import { table } from '../src/cli/terminal.js';
import { printable, printableJson } from '../src/policy/printable.js';
import { carapace } from './helpers/cli.js';
import { sharedTempDir } from './helpers/sandbox.js';

/** One of each: bidi embeddings and overrides, isolates, zero-width and marks, the BOM; ESC; C1 CSI. */
const TRICKS = [
  '\u202a',
  '\u202b',
  '\u202c',
  '\u202d',
  '\u202e',
  '\u2066',
  '\u2067',
  '\u2068',
  '\u2069',
  '\u200b',
  '\u200c',
  '\u200d',
  '\u200e',
  '\u200f',
  '\ufeff',
  '\x1b',
  '\x9b',
];
const NAME = `a${TRICKS.join('')}z`;
const SHOWN =
  'a\\u{202a}\\u{202b}\\u{202c}\\u{202d}\\u{202e}\\u{2066}\\u{2067}\\u{2068}\\u{2069}' +
  '\\u{200b}\\u{200c}\\u{200d}\\u{200e}\\u{200f}\\u{feff}\\x1b\\x9bz';

function expectNoneRaw(text: string): void {
  for (const c of TRICKS) expect(text).not.toContain(c);
}

describe('one escaping rule for every view', () => {
  it('printable escapes each bidi, zero-width and control character', () => {
    expect(printable(NAME)).toBe(SHOWN);
  });

  it("a table's cells", () => {
    const out = table(['NAME', 'COMMAND'], [[NAME, `sh -c ${NAME}`]]);
    expectNoneRaw(out);
    expect(out).toContain(SHOWN);
    expect(out).toContain(`sh -c ${SHOWN}`);
  });

  it("carapace term's lines: a decision, a proposal's rationale, a log line", () => {
    const d: Decision = {
      sandbox: NAME,
      t: 0,
      allowed: false,
      level: 'request',
      host: `${NAME}.test`,
      port: 443,
      method: 'GET',
      path: `/${NAME}`,
      binary: `/usr/bin/${NAME}`,
    };
    const line = decisionLine(d, 1000);
    expectNoneRaw(line);
    expect(line).toContain(`GET ${SHOWN}.test:443/${SHOWN} ${SHOWN}`);
    const p = { rule: null, rationale: NAME, risks: [] } as unknown as ProposalView;
    const detail = proposalDetail(p, 1000).join('\n');
    expectNoneRaw(detail);
    expect(detail).toContain(`the agent says: ${SHOWN}`);
    expect(fit(`web: ${NAME}`, 1000)).toBe(`web: ${SHOWN}`);
  });

  it('JSON the CLI prints: the same value, none of the characters raw, indented or on one line', () => {
    const rec = { message: NAME, nested: [NAME] };
    for (const json of [printableJson(rec), printableJson(rec, 2)]) {
      expectNoneRaw(json);
      expect(JSON.parse(json)).toEqual(rec);
    }
    expect(printableJson(rec)).toContain('a\\u202a\\u202b');
    expect(printableJson(rec, 2).split('\n')).toHaveLength(6);
  });

  it("policy diff's and policy apply-ops' lines: a policy's value shown, none of the characters raw", () => {
    const dir = sharedTempDir();
    const base = join(dir, 'base.yaml');
    const tricked = join(dir, 'tricked.yaml');
    writeFileSync(base, 'version: 1\nfilesystem_policy:\n  read_only: [/usr]\n');
    writeFileSync(
      tricked,
      `version: 1\nfilesystem_policy:\n  read_only: [/usr, ${JSON.stringify(`/opt/${NAME}`)}]\n`,
    );
    const diff = carapace(['policy', 'diff', base, tricked]);
    expect(diff.status).toBe(0);
    expect(diff.stdout).toContain('read_only');
    expectNoneRaw(diff.stdout);
    const ops = carapace([
      'policy',
      'apply-ops',
      base,
      '--add-endpoint',
      'a.test:443',
      '--binary',
      `/opt/${NAME}`,
    ]);
    expect(ops.stdout).toContain('a.test');
    expectNoneRaw(ops.stdout);
  });
});
