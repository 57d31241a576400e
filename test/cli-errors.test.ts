/**
 * Mistyped command lines get the one line every error of Carapace's is (`carapace: what (how to go
 * on)`), with commander's suggestion when it has one: it used to print `error: …` and cut the
 * "(Did you mean …?)" line off with the rest.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { carapace } from './helpers/cli.js';

describe('a mistyped command line', () => {
  it.each([
    [
      ['provider', 'create', 'p', '--type', 'openai', '--credential-en', 'K'],
      "carapace: unknown option '--credential-en' (did you mean --credential-env?)\n",
    ],
    [
      ['provider', 'create', 'p', '--type', 'openai', '--api-key', 'sk-x'],
      "carapace: unknown option '--api-key' (--help lists them)\n",
    ],
    [['sandboxx', 'list'], "carapace: unknown command 'sandboxx' (did you mean sandbox?)\n"],
    [['policy', 'validate'], "carapace: missing required argument 'files'\n"],
  ])('%j', (args, line) => {
    const r = carapace(args);
    expect({ status: r.status, stdout: r.stdout, stderr: r.stderr }).toEqual({
      status: 1,
      stdout: '',
      stderr: line,
    });
  });
});

/**
 * An error's message can carry text a sandbox chose (a path it planted, a gateway's message about
 * its sandbox): the top-level printer escapes every line it prints (src/policy/printable.ts),
 * whatever the error, and keeps the lines a message has (a policy's diagnostics, one a line).
 */
describe('an error line with control or bidi characters', () => {
  it('a path with an escape sequence, a C1 control and a right-to-left override: shown escaped', () => {
    const r = carapace(['run', '--policy', '/nonexistent/a\x1b[2J\x9bb\u202ec.yaml', '--', 'true']);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/^carapace: [^\n]*\n$/);
    expect(r.stderr).toContain('/nonexistent/a\\x1b[2J\\x9bb\\u{202e}c.yaml');
  });

  it("a policy's diagnostics: one line each, each escaped", () => {
    const dir = join(mkdtempSync(join(tmpdir(), 'carapace-errors-')), 'a\x1b]0;x\x07b');
    mkdirSync(dir);
    const file = join(dir, 'policy.yaml');
    writeFileSync(file, 'version: 1\nfoo: 1\nnetwork_policies: 3\n');
    const r = carapace(['run', '--policy', file, '--', 'true']);
    const shown = file.replace('\x1b', '\\x1b').replace('\x07', '\\x07');
    expect(r.stderr.split('\n')).toEqual([
      expect.stringMatching(new RegExp(`^carapace: ${escapeRegExp(shown)}:2:1: unknown key "foo"`)),
      expect.stringMatching(new RegExp(`^${escapeRegExp(shown)}:3:19: "network_policies" must be a map`)),
      '',
    ]);
    rmSync(dirname(dir), { recursive: true });
  });
});

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
