/**
 * `carapace run` with an inline route whose key comes from a credential the run was not given:
 * the sandbox starts (a later save of the policy may not need it), with one warning line that
 * says which route, which variable, and the flag that passes it. Given, nothing is said.
 */
import { describe, expect, it } from 'vitest';
import { carapace } from '../helpers/cli.js';
import { policyFile } from '../helpers/sandbox.js';

const POLICY = `version: 1
filesystem_policy:
  read_only: [/usr, /lib, /lib64, /bin, /etc]
  read_write: [/sandbox, /tmp]
inference:
  routes:
    cloud:
      provider: openai-compatible
      endpoint: "https://api.example.test/v1"
      model: some-model
      credential_env: EXAMPLE_API_KEY
`;

describe('an inline route whose credential was not passed', () => {
  it('starts with one warning line naming the route, the variable and --credential; none when passed', () => {
    const policy = policyFile(POLICY);
    const without = carapace(['run', '--policy', policy, '--', 'true']);
    expect(without.status).toBe(0);
    expect(without.stderr).toBe(
      'carapace: warning: inference route cloud takes its key from EXAMPLE_API_KEY, which this run was not given: ' +
        'every call to it fails (pass --credential EXAMPLE_API_KEY)\n',
    );
    const given = carapace(['run', '--policy', policy, '--credential', 'EXAMPLE_API_KEY', '--', 'true'], {
      env: { EXAMPLE_API_KEY: 'sk-test' },
    });
    expect({ status: given.status, stderr: given.stderr }).toEqual({ status: 0, stderr: '' });
  });
});

/**
 * The warning quotes the route's name, which the policy file chose: a name with an escape
 * sequence and a right-to-left override is shown escaped (src/policy/printable.ts), on one line.
 */
describe("the warning quotes the route's name", () => {
  it('escaped: an escape sequence and a bidi override act on nothing', () => {
    const policy = policyFile(POLICY.replace('    cloud:', '    "c\\e[2J\\u202eloud":'));
    const r = carapace(['run', '--policy', policy, '--', 'true']);
    expect(r.status).toBe(0);
    expect(r.stderr).toBe(
      'carapace: warning: inference route c\\x1b[2J\\u{202e}loud takes its key from EXAMPLE_API_KEY, ' +
        'which this run was not given: every call to it fails (pass --credential EXAMPLE_API_KEY)\n',
    );
  });
});
