/**
 * Filesystem escapes from inside a sandbox (default policy): races on /sandbox, links and renames
 * across its edge, the init's /proc entries, and file handles. The goal each time is a host file
 * that is not in the allowlist (a secret beside the workspace, readable by everyone on the host);
 * the baselines show the same move reaching it where Carapace is not in the way.
 */
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { pySyscall, runInSandbox, runOnHost, sharedTempDir } from '../helpers/sandbox.js';

/** A world-readable secret in `parent`, next to a workspace `parent/ws`: what the races aim at. */
function secretBesideWorkspace(): { parent: string; ws: string; secret: string } {
  const parent = sharedTempDir('carapace-escape-');
  chmodSync(parent, 0o755);
  const secret = join(parent, 'SECRET');
  writeFileSync(secret, 'host secret\n', { mode: 0o644 });
  const ws = join(parent, 'ws');
  mkdirSync(ws, { mode: 0o777 });
  chmodSync(ws, 0o777);
  return { parent, ws, secret };
}

/**
 * Two processes: one keeps swapping `root/d` between a directory (holding a decoy SECRET) and
 * symlinks towards the host secret (absolute, relative, through /proc/self/root); the other keeps
 * opening `root/d/SECRET` and prints whatever it read that was not the decoy.
 */
const SYMLINK_RACE = (root: string, secret: string) => {
  const hostDir = secret.replace(/\/SECRET$/, '');
  return `
import os, time
root = ${JSON.stringify(root)}
targets = ['${hostDir}', '../..${hostDir}', '/proc/self/root${hostDir}', '/proc/1/root${hostDir}', '..']
os.makedirs(root + '/real', exist_ok=True)
open(root + '/real/SECRET', 'w').write('decoy\\n')
if os.fork() == 0:
    end = time.time() + 2
    while time.time() < end:
        for t in targets:
            for step in (lambda: os.rename(root + '/real', root + '/d'),
                         lambda: os.rename(root + '/d', root + '/real'),
                         lambda: os.symlink(t, root + '/d'),
                         lambda: os.unlink(root + '/d')):
                try:
                    step()
                except OSError:
                    pass
    os._exit(0)
seen, end = set(), time.time() + 2
while time.time() < end:
    try:
        seen.add(open(root + '/d/SECRET').read().strip())
    except OSError:
        pass
os.wait()
print(sorted(seen - {'decoy'}))
`;
};

/** Renames a directory in and out of a deep path while another process walks `..` from inside it. */
const RENAME_RACE = `
import os, time
os.makedirs('/sandbox/a/b/c/d', exist_ok=True)
if os.fork() == 0:
    end = time.time() + 2
    while time.time() < end:
        try:
            os.rename('/sandbox/a/b', '/sandbox/moved')
            os.rename('/sandbox/moved', '/sandbox/a/b')
        except OSError:
            pass
    os._exit(0)
seen, end = set(), time.time() + 2
while time.time() < end:
    try:
        os.chdir('/sandbox/a/b/c/d')
        for up in range(1, 8):
            seen.update(os.listdir('/'.join(['..'] * up)))
    except OSError:
        pass
os.wait()
print('SECRET' in seen, 'ws' in seen)
`;

describe('races on /sandbox', () => {
  it('a directory swapped for symlinks while another process opens through it never reaches the host', () => {
    const { ws, secret } = secretBesideWorkspace();
    const inside = runInSandbox(['python3', '-c', SYMLINK_RACE('/sandbox', secret)], ['--workspace', ws]);
    expect(inside.stderr).toBe('');
    expect(inside.stdout.trim()).toBe('[]');
    // Baseline: the same race run on the host, as an unprivileged uid, reads the secret.
    const scratch = sharedTempDir();
    chmodSync(scratch, 0o777);
    const outside = runOnHost(['python3', '-c', SYMLINK_RACE(join(scratch, 'race'), secret)]);
    expect(outside.stdout.trim()).toBe("['host secret']");
  });

  it('renaming a directory out from under a process walking ".." never leaves the sandbox', () => {
    const { ws } = secretBesideWorkspace();
    const inside = runInSandbox(['python3', '-c', RENAME_RACE], ['--workspace', ws]);
    expect(inside.stderr).toBe('');
    // '..' stops at the sandbox's root: neither the secret nor the workspace's own host name shows.
    expect(inside.stdout.trim()).toBe('False False');
  });

  it('cannot link or rename a file across the edge of /sandbox', () => {
    const r = runInSandbox(
      pySyscall(
        [
          'open("/sandbox/f", "w").close()',
          'attempt(lambda: os.link("/etc/passwd", "/sandbox/passwd"))',
          'attempt(lambda: os.link("/sandbox/f", "/tmp/f"))',
          'attempt(lambda: os.rename("/sandbox/f", "/tmp/f"))',
          'attempt(lambda: os.rename("/tmp", "/sandbox/tmp"))',
          'attempt(lambda: os.rename("/sandbox", "/tmp/sandbox"))',
        ].join('\n'),
      ),
    );
    expect(r.stdout.trim().split('\n')).toEqual(['EXDEV', 'EXDEV', 'EXDEV', 'EXDEV', 'EXDEV']);
    // Baseline: on the host, root links /etc/passwd into a directory of the same filesystem.
    const dir = sharedTempDir();
    const outside = runOnHost(pySyscall(`attempt(lambda: os.link("/etc/passwd", "${dir}/passwd"))`), 0);
    expect(outside.stdout.trim()).toBe('ok');
  });
});

describe("the init's /proc entries", () => {
  // PID 1 holds the relay's host directory fd and is not dumpable: none of its magic links or
  // memory may be reached. A sibling process of the agent (dumpable, same uid) is the baseline.
  const PROC_PROBE = (pid: string) =>
    [
      `for p in ["root", "cwd", "exe"]:`,
      `    attempt(lambda: os.readlink(f"/proc/{${pid}}/{p}"))`,
      `for p in ["root/etc/hostname", "cwd/.", "environ", "mem", "maps", "ns/net", "task/{0}/root/etc/hostname", "fd/" + str(held)]:`,
      `    attempt(lambda: os.close(os.open(f"/proc/{${pid}}/" + p.format(${pid}), os.O_RDONLY)))`,
      `attempt(lambda: os.listdir(f"/proc/{${pid}}/fd"))`,
    ].join('\n');

  it('/proc/1/{root,cwd,exe,environ,mem,maps,fd,ns} of the init: EACCES; the same on a sibling works', () => {
    const body = [
      'held = os.open("/etc/hostname", os.O_RDONLY)',
      'pid = os.fork()',
      'if pid == 0:',
      '    import time; time.sleep(30); os._exit(0)',
      'one = 1',
      PROC_PROBE('one'),
      'print("--")',
      PROC_PROBE('pid'),
      'os.kill(pid, 9)',
    ].join('\n');
    const r = runInSandbox(pySyscall(body));
    expect(r.stderr).toBe('');
    const [init, sibling] = r.stdout.trim().split('--\n');
    expect(init?.trim().split('\n')).toEqual(Array(12).fill('EACCES'));
    expect(sibling?.trim().split('\n')).toEqual(Array(12).fill('ok'));
  });

  it('/proc/self/root is the sandbox’s own root, and only sandbox processes are in /proc', () => {
    const { secret } = secretBesideWorkspace();
    const body = [
      'print(os.stat("/proc/self/root").st_ino == os.stat("/").st_ino, os.readlink("/proc/self/root"))',
      `attempt(lambda: open("/proc/self/root${secret}"))`,
      `attempt(lambda: open("/proc/2/root${secret}"))`,
      'print(sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))',
    ].join('\n');
    const r = runInSandbox(pySyscall(body));
    expect(r.stdout.trim().split('\n')).toEqual(['True /', 'ENOENT', 'ENOENT', '[1, 2]']);
  });
});

describe('file handles', () => {
  // Shocker: open_by_handle_at opens a file by inode, around every path-based check. It needs
  // CAP_DAC_READ_SEARCH, which nobody inside has; seccomp denies both calls anyway.
  const HANDLES = [
    'class FH(ctypes.Structure):',
    '    _fields_ = [("bytes", ctypes.c_uint), ("type", ctypes.c_int), ("data", ctypes.c_ubyte * 128)]',
    'fh = FH(); fh.bytes = 128; mount_id = ctypes.c_int()',
    'report(libc.name_to_handle_at(-100, b"/usr", ctypes.byref(fh), ctypes.byref(mount_id), 0))',
    'if fh.type == 0:',
    '    fh.bytes, fh.type = 8, 1',
    '    fh.data[0] = 2  # ext4 root inode, as the original exploit guessed',
    'report(libc.open_by_handle_at(os.open("/usr", os.O_RDONLY), ctypes.byref(fh), os.O_RDONLY))',
  ].join('\n');

  it('name_to_handle_at and open_by_handle_at: EPERM inside, both work for root on the host', () => {
    expect(runInSandbox(pySyscall(HANDLES)).stdout.trim().split('\n')).toEqual(['EPERM', 'EPERM']);
    expect(runOnHost(pySyscall(HANDLES), 0).stdout.trim().split('\n')).toEqual(['ok', 'ok']);
  });
});
