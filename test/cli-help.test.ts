/**
 * `--help` reads as a user's page, not commander's debug output: a repeatable option starts as an
 * empty list, and "(default: [])" after each of them (eleven in `inference set --help`) said
 * nothing but took a line each. A default that means something (`--restart`'s "never") stays.
 * And the first thing a new user asks, `gateway status`, says what to run when none answers.
 */
import { describe, expect, it } from 'vitest';
import { carapace } from './helpers/cli.js';

describe('--help', () => {
  it.each([['sandbox', 'create'], ['inference', 'set'], ['run']])('%s %s: no "(default: [])"', (...args) => {
    const r = carapace([...args, '--help']);
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('(repeatable)');
    expect(r.stdout).not.toContain('default: []');
  });

  it('a default that means something is still shown', () => {
    const r = carapace(['sandbox', 'create', '--help']);
    expect(r.stdout).toMatch(/--restart <policy> +never \| on-failure \| always \(default: "never"\)/);
  });
});

describe('gateway status and stop, with no gateway', () => {
  it('say how to start one (status exits 3, stop 0: nothing to stop)', () => {
    const status = carapace(['gateway', 'status']);
    expect({ status: status.status, stdout: status.stdout }).toEqual({
      status: 3,
      stdout: expect.stringMatching(
        /^no gateway answers at \S+gateway\.sock: start one with carapace gateway start\n$/,
      ),
    });
    const stop = carapace(['gateway', 'stop']);
    expect({ status: stop.status, stdout: stop.stdout }).toEqual({
      status: 0,
      stdout: expect.stringMatching(/^no gateway answers at \S+gateway\.sock\n$/),
    });
  });
});
