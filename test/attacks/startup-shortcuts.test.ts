/**
 * The one-shot start-up takes two shortcuts (src/runtime/policy-settings.ts, src/cli/run/run-command.ts):
 * a policy validated once is not validated again (for the built-in default policy, which has no
 * network: a --policy file is always loaded whole), and a well-formed `carapace run` command line
 * is read without commander. Neither may ever run a sandbox with settings its policy does not say: an
 * edited (tightened) policy, a broken one or a tampered cache entry must all be judged afresh.
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadSandboxSettings } from '../../src/runtime/policy-settings.js';
import { carapace, freshHome } from '../helpers/cli.js';
import { policyFile, runInSandbox } from '../helpers/sandbox.js';

const WITH_ETC = `version: 1
filesystem_policy:
  read_only: [/usr, /lib, /lib64, /bin, /etc]
  read_write: [/sandbox, /tmp]
`;
const PROBE = ['python3', '-c', 'import os; print(os.path.exists("/etc/hostname"), os.path.exists("/opt"))'];

function cacheEntries(state: string): string[] {
  const dir = join(state, 'policy-cache');
  return readdirSync(dir).map((f) => join(dir, f));
}

describe('the policy settings cache (the built-in default policy is read through it)', () => {
  it('a policy tightened between runs is applied as tightened', async () => {
    const state = join(freshHome(), 'state');
    const policy = policyFile(WITH_ETC.replace('/etc]', '/etc, /opt]'));
    expect((await loadSandboxSettings(policy, state)).readOnly).toContain('/opt');
    expect(cacheEntries(state)).toHaveLength(1);
    writeFileSync(policy, WITH_ETC);
    expect((await loadSandboxSettings(policy, state)).readOnly).not.toContain('/opt');
  });

  it('a policy broken after a good read is refused with its position, not read from the cache', async () => {
    const state = join(freshHome(), 'state');
    const policy = policyFile(WITH_ETC);
    await loadSandboxSettings(policy, state);
    writeFileSync(policy, WITH_ETC.replace('read_only', 'read_olny'));
    await expect(loadSandboxSettings(policy, state)).rejects.toThrow(new RegExp(`${policy}:3:3: `));
  });

  it('a malformed cache entry is ignored, and another policy’s text never hits an entry', async () => {
    const state = join(freshHome(), 'state');
    const policy = policyFile(WITH_ETC);
    expect((await loadSandboxSettings(policy, state)).readOnly).not.toContain('/opt');
    const [entry] = cacheEntries(state);
    // A malformed entry (here: limits missing) is ignored and the policy validated again.
    const saved = JSON.parse(readFileSync(entry!, 'utf8')) as { source: string; settings: object };
    const widened = { ...saved.settings, readOnly: ['/usr', '/etc', '/opt'] };
    writeFileSync(entry!, JSON.stringify({ ...saved, settings: { ...widened, limits: 'none' } }));
    expect((await loadSandboxSettings(policy, state)).readOnly).not.toContain('/opt');
    // Another policy's text never hits this entry: the entry holds the text it was made from.
    const other = policyFile(WITH_ETC.replace('/etc]', '/etc, /opt]'));
    expect((await loadSandboxSettings(other, state)).readOnly).toContain('/opt');
    // Not even under this policy's name (a key collision): its text is not this one.
    const [otherEntry] = cacheEntries(state).filter((f) => f !== entry);
    writeFileSync(entry!, readFileSync(otherEntry!));
    expect((await loadSandboxSettings(policy, state)).readOnly).not.toContain('/opt');
  });

  it('a one-shot run of the default policy uses it, and still enforces the policy', () => {
    const home = freshHome();
    expect(runInSandbox(PROBE, [], home).stdout).toBe('True False\n');
    expect(cacheEntries(join(home, 'state'))).toHaveLength(1);
    expect(runInSandbox(PROBE, [], home).stdout).toBe('True False\n');
  });
});

describe('the run fast path', () => {
  it('reads the same command line as commander does', () => {
    const home = freshHome();
    const policy = policyFile(WITH_ETC);
    const script = 'echo "$A $B $(hostname)"; exit 7';
    // With `--`: the fast path. Without it (and with the option after the command): commander.
    const fast = runInSandbox(
      ['sh', '-c', script],
      ['--policy', policy, '--env', 'A=1', '--env=B=2', '--name', 'n1'],
      home,
    );
    const slow = runInSandbox(
      [],
      ['--policy', policy, '--env', 'A=1', '--env', 'B=2', '--name', 'n1', 'sh', '-c', script],
      home,
    );
    expect(fast).toEqual({ status: 7, stdout: '1 2 n1\n', stderr: '' });
    expect(slow).toEqual(fast);
  });

  it("runs the default policy without loading Node's crypto (OpenSSL's start-up is ~5 ms)", () => {
    const home = freshHome();
    // A preload that reports, as the process exits, which of Node's crypto modules it loaded.
    const report = join(home, 'crypto-report.cjs');
    writeFileSync(
      report,
      "process.on('exit', () => require('fs').writeSync(2, 'crypto: ' + JSON.stringify(" +
        'process.moduleLoadList.filter((m) => /crypto/.test(m))) + "\\n"));\n',
    );
    const r = carapace(['run', '--', '/bin/true'], { home, env: { NODE_OPTIONS: `--require ${report}` } });
    expect(r).toEqual({ status: 0, stdout: '', stderr: 'crypto: []\n' });
  });
});
