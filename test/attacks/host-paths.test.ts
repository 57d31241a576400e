/**
 * Attacks on the host paths Carapace uses as root, through trees a sandbox can write (issue 10,
 * classes 1 and 9). A sandbox leaves symlinks and files in its workspace (or a writable --mount),
 * and they stay after it exits. The host must never follow such a symlink, nor take a policy or an
 * audit file from such a tree, nor leave a read_only path for the agent to create.
 *
 * Each attack is planted by a real sandbox run, as an agent would, and the next run (the user's)
 * names a path through it. Victims are root's host files and directories; the tests check they
 * are untouched, that the run is refused with one line, and the audit event where there is one.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { carapace, freshHome } from '../helpers/cli.js';
import { requires } from '../helpers/premises.js';
import { policyFile, readAudit, runInSandbox, sharedTempDir } from '../helpers/sandbox.js';

const FILES = 20;

/** A host directory of root-owned files f0…f19, each "host\n". */
function victimDir(): string {
  const dir = sharedTempDir('carapace-victim-');
  for (let i = 0; i < FILES; i++) writeFileSync(join(dir, `f${i}`), 'host\n', { mode: 0o644 });
  return dir;
}

function expectUntouched(victim: string): void {
  expect(statSync(victim).uid).toBe(0);
  expect(readdirSync(victim).sort()).toEqual(Array.from({ length: FILES }, (_, i) => `f${i}`).sort());
  for (const f of readdirSync(victim)) {
    expect(statSync(join(victim, f)).uid).toBe(0);
    expect(readFileSync(join(victim, f), 'utf8')).toBe('host\n');
  }
}

const POLICY = `version: 1
filesystem_policy:
  read_only: [/usr, /lib, /lib64, /bin, /etc]
  read_write: [/sandbox, /tmp]
`;

/** A sandbox run on `ws` (in `home`) that leaves `command`'s work behind, as an agent would. */
function plant(ws: string, home: string, command: string): void {
  const r = runInSandbox(['sh', '-c', command], ['--workspace', ws], home);
  expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: '' });
}

function refusedStart(audit: string): string | undefined {
  return readAudit(audit).find((e) => e.class_uid === 2004)?.message;
}

describe('symlinks a sandbox planted, in paths the user names later', () => {
  it("a workspace nested in another sandbox's workspace, through its symlink: refused, the host directory stays root's", (ctx) => {
    requires(ctx, 'root');
    const victim = victimDir();
    const ws = sharedTempDir('carapace-ws-');
    const home = freshHome();
    plant(ws, home, `ln -s ${victim} /sandbox/sub`);
    const audit = join(sharedTempDir(), 'audit.jsonl');
    const r = runInSandbox(['true'], ['--workspace', join(ws, 'sub'), '--audit', audit], home);
    expectUntouched(victim);
    expect(r.status).toBe(125);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toContain(`${join(ws, 'sub')} is a symlink (to ${victim}) inside ${ws}`);
    expect(refusedStart(audit)).toMatch(/symlink/);
  });

  it('a --mount through a symlink a sandbox planted in its workspace: refused, the host directory not bound', () => {
    const victim = victimDir();
    const ws = sharedTempDir('carapace-ws-');
    const home = freshHome();
    plant(ws, home, `ln -s ${victim} /sandbox/data`);
    const audit = join(sharedTempDir(), 'audit.jsonl');
    const r = runInSandbox(
      ['cat', '/data/f0'],
      ['--mount', `${join(ws, 'data')}:/data:ro`, '--audit', audit],
      home,
    );
    expect(r.stdout).not.toContain('host');
    expect(r.status).toBe(125);
    expect(r.stderr).toContain(`${join(ws, 'data')} is a symlink (to ${victim})`);
    expect(refusedStart(audit)).toMatch(/symlink/);
    expectUntouched(victim);
  });

  it('a planted symlink whose target holds a terminal escape and a newline: the refusal shows it escaped, on one line', () => {
    const ws = sharedTempDir('carapace-ws-');
    const home = freshHome();
    // The target the agent chose: clear the operator's screen, then forge a line of its own.
    plant(ws, home, `ln -s "$(printf '/x\\033[2J\\ncarapace: all fine')" /sandbox/data`);
    const r = runInSandbox(['true'], ['--mount', `${join(ws, 'data')}:/data:ro`], home);
    expect(r.status).toBe(125);
    expect(r.stderr).not.toContain('\x1b');
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toContain(
      `${join(ws, 'data')} is a symlink (to /x\\x1b[2J\\x0acarapace: all fine) inside ${ws}`,
    );
  });

  it("a read_only path a policy lists in another sandbox's workspace, through its symlink: refused, not bound", () => {
    const victim = victimDir();
    const ws = sharedTempDir('carapace-ws-');
    const home = freshHome();
    // The symlink is a parent of the listed path (one that is itself a symlink is recreated as one).
    plant(ws, home, `ln -s ${dirname(victim)} /sandbox/conf`);
    const listed = join(ws, 'conf', basename(victim));
    const policy = policyFile(POLICY.replace('/etc]', `/etc, ${listed}]`));
    const audit = join(sharedTempDir(), 'audit.jsonl');
    const r = runInSandbox(['cat', `${listed}/f0`], ['--policy', policy, '--audit', audit], home);
    expect(r.stdout).not.toContain('host');
    expect(r.status).toBe(125);
    expect(r.stderr).toContain(`${join(ws, 'conf')} is a symlink (to ${dirname(victim)}) inside ${ws}`);
    expect(refusedStart(audit)).toMatch(/symlink/);
  });

  it('an audit file a sandbox replaced by a symlink: root never appends to its target', () => {
    const victim = join(victimDir(), 'f0');
    const ws = sharedTempDir('carapace-ws-');
    const home = freshHome();
    plant(ws, home, `ln -s ${victim} /sandbox/audit.jsonl`);
    const r = runInSandbox(['true'], ['--workspace', ws, '--audit', join(ws, 'audit.jsonl')], home);
    expect(readFileSync(victim, 'utf8')).toBe('host\n');
    expect(r.status).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toContain(`--audit ${join(ws, 'audit.jsonl')}: `);
  });
});

describe('policy and audit files inside trees a sandbox writes', () => {
  it("a policy file in another sandbox's workspace, written by that sandbox: refused", () => {
    const ws = sharedTempDir('carapace-ws-');
    const home = freshHome();
    // The agent writes itself a policy; the user later runs another sandbox with it.
    plant(ws, home, `cat > /sandbox/policy.yaml <<'EOF'\n${POLICY}EOF`);
    const audit = join(sharedTempDir(), 'audit.jsonl');
    const r = runInSandbox(['true'], ['--policy', join(ws, 'policy.yaml'), '--audit', audit], home);
    expect(r.status).toBe(2);
    expect(readAudit(audit).find((e) => e.class_uid === 2004)?.finding_info).toMatchObject({
      uid: 'policy-file-refused',
    });
    expect(r.stderr).toBe(
      `carapace: --policy ${join(ws, 'policy.yaml')}: ${join(ws, 'policy.yaml')} is inside ${ws}, which a ` +
        'sandbox can write; keep policy and audit files outside every workspace and writable --mount\n',
    );
  });

  it("a policy file in the run's own workspace (the agent would edit the policy that binds it): refused", () => {
    const ws = sharedTempDir('carapace-ws-');
    writeFileSync(join(ws, 'policy.yaml'), POLICY);
    const r = runInSandbox(['true'], ['--workspace', ws, '--policy', join(ws, 'policy.yaml')]);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/is inside .*, which a sandbox can write/);
  });

  it('a policy file in a writable --mount another sandbox was given: refused', () => {
    const shared = sharedTempDir('carapace-shared-');
    writeFileSync(join(shared, 'policy.yaml'), POLICY);
    const home = freshHome();
    const first = runInSandbox(['true'], ['--mount', `${shared}:/shared`], home);
    expect(first.status).toBe(0);
    const r = runInSandbox(['true'], ['--policy', join(shared, 'policy.yaml')], home);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain(`is inside ${shared}, which a sandbox can write`);
  });

  it("an audit file in the run's own workspace (the agent could read or erase its trail): refused", () => {
    const ws = sharedTempDir('carapace-ws-');
    const audit = join(ws, 'audit.jsonl');
    const r = runInSandbox(['sh', '-c', `: > /sandbox/audit.jsonl`], ['--workspace', ws, '--audit', audit]);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain(`--audit ${audit}: ${audit} is inside ${ws}, which a sandbox can write`);
    expect(existsSync(audit)).toBe(false);
  });
});

describe('a read_only path that does not exist at start', () => {
  // NemoClaw's layout (test/policy/fixtures/compat/nemoclaw/openclaw-sandbox.yaml): its gateway
  // config read-only inside the writable workspace, its writable state beside it.
  const NEMOCLAW = policyFile(
    POLICY.replace('/etc]', '/etc, /sandbox/.openclaw]').replace('/tmp]', '/tmp, /sandbox/.openclaw-data]'),
  );

  it("is made, empty and read-only (NemoClaw's /sandbox/.openclaw in a fresh workspace): never the agent's to create", () => {
    const ws = sharedTempDir('carapace-ws-');
    const r = runInSandbox(
      [
        'sh',
        '-c',
        'mkdir -p /sandbox/.openclaw; echo tampered > /sandbox/.openclaw/openclaw.json || echo refused',
      ],
      ['--policy', NEMOCLAW, '--workspace', ws],
    );
    expect(r.stdout).toBe('refused\n');
    expect(r.stderr).toMatch(/Read-only file system/);
    expect(readdirSync(join(ws, '.openclaw'))).toEqual([]);
    expect(statSync(join(ws, '.openclaw')).uid).toBe(process.getuid?.());
    expect(statSync(join(ws, '.openclaw')).mode & 0o777).toBe(0o755);
  });

  it('with landlock hard_requirement, the start is refused instead', () => {
    const ws = sharedTempDir('carapace-ws-');
    mkdirSync(join(ws, 'kept'));
    const policy = policyFile(
      POLICY.replace('/etc]', '/etc, /sandbox/.cfg]') + 'landlock: { compatibility: hard_requirement }\n',
    );
    const r = carapace(['run', '--policy', policy, '--workspace', ws, '--', 'mkdir', '/sandbox/.cfg'], {
      home: freshHome(),
    });
    expect(r.status).toBe(125);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toContain('/sandbox/.cfg is read_only but does not exist in the workspace');
    expect(existsSync(join(ws, '.cfg'))).toBe(false);
  });
});
