/**
 * Mistyped command lines get the one line every error of Carapace's is (`carapace: what (how to go
 * on)`), with commander's suggestion when it has one: it used to print `error: …` and cut the
 * "(Did you mean …?)" line off with the rest.
 */
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
