/**
 * Attacks on Carapace's own start-up: the host side prepares a workspace the sandbox has written
 * to (it persists between runs, and two sandboxes may share one), running as root. A symlink the
 * sandbox planted there must never make the host chown, create or bind anything outside it.
 *
 * The symlinks below are made by a sandbox run, exactly as an agent would, and point at host paths
 * (the sandbox cannot see them, but the host resolves them). Each victim is a host directory of
 * root-owned files; the tests check the victims are untouched and the start refused or harmless.
 */
import { existsSync, linkSync, mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { freshHome } from '../helpers/cli.js';
import { policyFile, readAudit, runInSandbox, sharedTempDir, startInSandbox } from '../helpers/sandbox.js';

const FILES = 40;

/** A host directory of root-owned files f0…f39, each "host\n": what the attacks aim at. */
function victimDir(): string {
  const dir = sharedTempDir('carapace-victim-');
  for (let i = 0; i < FILES; i++) writeFileSync(join(dir, `f${i}`), 'host\n', { mode: 0o644 });
  return dir;
}

function expectUntouched(victim: string): void {
  expect(statSync(victim).uid).toBe(0);
  expect(readdirSync(victim).sort()).toEqual(Array.from({ length: FILES }, (_, i) => `f${i}`).sort());
  for (const f of readdirSync(victim)) expect(statSync(join(victim, f)).uid).toBe(0);
}

const POLICY = (readOnly: string[], readWrite: string[]) => `version: 1
filesystem_policy:
  read_only: [/usr, /lib, /lib64, /bin, /etc${readOnly.map((p) => `, ${p}`).join('')}]
  read_write: [/sandbox, /tmp${readWrite.map((p) => `, ${p}`).join('')}]
`;

describe('symlinks planted in the workspace, followed by the next start-up', () => {
  it('a symlink and a hard link in the workspace are not followed when it is handed to a new uid', () => {
    const victim = victimDir();
    const ws = sharedTempDir('carapace-ws-');
    const plant = runInSandbox(['ln', '-s', victim, '/sandbox/link'], ['--workspace', ws]);
    expect(plant.status).toBe(0);
    // A hard link the sandbox cannot make (another mount, root's file), planted host-side.
    linkSync(join(victim, 'f1'), join(ws, 'hard'));
    mkdirSync(join(ws, 'own'));
    writeFileSync(join(ws, 'own', 'file'), 'mine\n');
    // A named sandbox gets a uid of its own: the workspace is handed over, walked.
    const home = freshHome();
    const r = runInSandbox(
      ['sh', '-c', 'cat /sandbox/own/file; stat -c %u /sandbox/own/file'],
      ['--workspace', ws, '--name', 'taker'],
      home,
    );
    expect(r.stdout).toBe('mine\n1000\n');
    expect(statSync(join(ws, 'own', 'file')).uid).toBe(statSync(ws).uid);
    expectUntouched(victim);
  });

  it('a symlink planted as the parent of a read_write sub-path: refused, no host directory created', () => {
    const victim = victimDir();
    const ws = sharedTempDir('carapace-ws-');
    expect(runInSandbox(['ln', '-s', victim, '/sandbox/a'], ['--workspace', ws]).status).toBe(0);
    const audit = join(sharedTempDir(), 'audit.jsonl');
    const policy = policyFile(POLICY([], ['/sandbox/a/b']));
    const r = runInSandbox(['true'], ['--policy', policy, '--workspace', ws, '--audit', audit]);
    expect(r.status).toBe(125);
    expect(r.stderr).toMatch(/symlink/);
    expect(r.stderr).toContain(join(ws, 'a'));
    expect(existsSync(join(victim, 'b'))).toBe(false);
    expectUntouched(victim);
    const refused = readAudit(audit).find((e) => e.class_uid === 2004);
    expect(refused?.message).toMatch(/symlink/);
  });

  it('read_write sub-paths, in /sandbox and elsewhere, are made for the sandbox and usable', () => {
    const ws = sharedTempDir('carapace-ws-');
    const policy = policyFile(POLICY([], ['/sandbox/a/b', '/opt/data/deep']));
    const r = runInSandbox(
      [
        'sh',
        '-c',
        'echo 1 > /sandbox/a/b/f && echo 2 > /opt/data/deep/f && cat /sandbox/a/b/f /opt/data/deep/f',
      ],
      ['--policy', policy, '--workspace', ws],
    );
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('1\n2\n');
    expect(statSync(join(ws, 'a')).uid).toBe(statSync(ws).uid);
  });

  it('a symlink planted at a read_only sub-path of /sandbox: refused, the host directory not bound', () => {
    const victim = victimDir();
    const ws = sharedTempDir('carapace-ws-');
    // Relative, so that it resolves inside the sandbox's new root as well as on the host.
    expect(
      runInSandbox(['ln', '-s', `../${victim.split('/').pop()}`, '/sandbox/.cfg'], ['--workspace', ws])
        .status,
    ).toBe(0);
    const audit = join(sharedTempDir(), 'audit.jsonl');
    const policy = policyFile(POLICY(['/sandbox/.cfg'], []));
    const r = runInSandbox(
      ['cat', '/sandbox/.cfg/f0'],
      ['--policy', policy, '--workspace', ws, '--audit', audit],
    );
    expect(r.stdout).not.toContain('host');
    expect(r.status).toBe(125);
    expect(r.stderr).toMatch(/symlink/);
    expect(readAudit(audit).find((e) => e.class_uid === 2004)?.message).toMatch(/symlink/);
  });
});

/**
 * The race: sandbox A keeps swapping directories of its workspace for symlinks to the victim, while
 * sandboxes with new uids start on the same workspace and Carapace hands it over to each (a walk
 * of the tree, as root). A path-based walk loses this race: it lists a directory, then chowns
 * "dir/name" after A has made "dir" a symlink.
 */
const RACER = (victim: string) => `
import os
os.chmod('/sandbox', 0o777)
os.mkdir('/sandbox/x', 0o777)
os.chmod('/sandbox/x', 0o777)
for i in range(8):
    d = f'/sandbox/x/d{i}'
    os.mkdir(d, 0o777)
    os.chmod(d, 0o777)
    for j in range(${FILES}):
        open(f'{d}/f{j}', 'w').close()
x = os.open('/sandbox/x', os.O_RDONLY | os.O_DIRECTORY)
print('racing', flush=True)
while True:
    for i in range(8):
        try:
            os.rename(f'd{i}', f'r{i}', src_dir_fd=x, dst_dir_fd=x)
            os.symlink(${JSON.stringify(victim)}, f'd{i}', dir_fd=x)
            os.unlink(f'd{i}', dir_fd=x)
            os.rename(f'r{i}', f'd{i}', src_dir_fd=x, dst_dir_fd=x)
        except OSError:
            pass
`;

describe('racing the start-up chown from a running sandbox', () => {
  it('the walk never follows a directory swapped for a symlink', async () => {
    const victim = victimDir();
    const ws = sharedTempDir('carapace-ws-');
    const home = freshHome();
    const racer = startInSandbox(
      ['python3', '-c', RACER(victim)],
      ['--name', 'racer', '--workspace', ws],
      home,
    );
    try {
      await racer.waitForStdout('racing');
      for (let round = 0; round < 20; round++) {
        const r = runInSandbox(['true'], ['--name', `next${round}`, '--workspace', ws], home);
        expect({ round, status: r.status, stderr: r.stderr }).toEqual({ round, status: 0, stderr: '' });
      }
      expectUntouched(victim);
    } finally {
      racer.child.kill('SIGTERM');
      await racer.result;
    }
  }, 180_000);
});
