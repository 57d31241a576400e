/**
 * Device nodes and setuid files: the two ways a file can carry more power than its bytes. Inside,
 * /dev is bwrap's minimal set; the sandbox cannot make device nodes (no CAP_MKNOD), every bind
 * mount is nodev and nosuid, no_new_privs is set, and host uid 0 does not exist in the user
 * namespace. Files planted by the host in the workspace are the realistic way in: those are tried.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, copyFileSync, existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { freshHome } from '../helpers/cli.js';
import { pySyscall, runInSandbox, runOnHost, sharedTempDir } from '../helpers/sandbox.js';

const S_IFCHR = 0o020000;
const S_IFBLK = 0o060000;

/** mknod(1)'s job, done by root on the host: `type` b or c. */
function mknod(path: string, type: 'b' | 'c', major: number, minor: number, mode: number): void {
  const r = spawnSync('mknod', ['-m', mode.toString(8), path, type, String(major), String(minor)], {
    encoding: 'utf8',
  });
  expect(r.stderr).toBe('');
}

describe('device nodes', () => {
  it('/dev inside holds only the harmless devices; the host’s disks, /dev/mem and /dev/kmsg are absent', () => {
    const body = [
      'import stat',
      'for name in sorted(os.listdir("/dev")):',
      '    st = os.lstat("/dev/" + name)',
      '    kind = "blk" if stat.S_ISBLK(st.st_mode) else "chr" if stat.S_ISCHR(st.st_mode) else "dir" if stat.S_ISDIR(st.st_mode) else "lnk"',
      '    print(name, kind)',
      'for p in ["/dev/mem", "/dev/kmsg", "/dev/vda", "/dev/sda", "/dev/kvm", "/dev/fuse", "/dev/loop0"]:',
      '    attempt(lambda: os.close(os.open(p, os.O_RDONLY)))',
    ].join('\n');
    const r = runInSandbox(pySyscall(body));
    expect(r.stderr).toBe('');
    const lines = r.stdout.trim().split('\n');
    expect(lines.slice(0, -7)).toEqual([
      'core lnk',
      'fd lnk',
      'full chr',
      'null chr',
      'ptmx lnk',
      'pts dir',
      'random chr',
      'shm dir',
      'stderr lnk',
      'stdin lnk',
      'stdout lnk',
      'tty chr',
      'urandom chr',
      'zero chr',
    ]);
    expect(lines.slice(-7)).toEqual(Array(7).fill('ENOENT'));
    expect(existsSync('/dev/kmsg')).toBe(true); // the host does have some of them
  });

  it('cannot make a device node anywhere (no CAP_MKNOD); root on the host can', () => {
    const body = [
      `attempt(lambda: os.mknod("/tmp/disk", 0o666 | ${S_IFBLK}, os.makedev(7, 0)))`,
      `attempt(lambda: os.mknod("/sandbox/mem", 0o666 | ${S_IFCHR}, os.makedev(1, 1)))`,
      `attempt(lambda: os.mknod("/dev/shm/null", 0o666 | ${S_IFCHR}, os.makedev(1, 3)))`,
    ].join('\n');
    expect(runInSandbox(pySyscall(body)).stdout.trim().split('\n')).toEqual(['EPERM', 'EPERM', 'EPERM']);
    const dir = sharedTempDir();
    const host = runOnHost(
      pySyscall(`attempt(lambda: os.mknod("${dir}/null", 0o666 | ${S_IFCHR}, os.makedev(1, 3)))`),
      0,
    );
    expect(host.stdout.trim()).toBe('ok');
  });

  it('a device node planted in the workspace stays root’s and cannot be opened inside (nodev)', () => {
    const ws = sharedTempDir('carapace-ws-');
    // /dev/null's numbers: a node the host's device cgroup lets this test open as a baseline.
    // A node of the host's disk would be refused inside in exactly the same way (nodev).
    mknod(join(ws, 'disk'), 'c', 1, 3, 0o666);
    const body =
      'attempt(lambda: os.close(os.open("/sandbox/disk", os.O_WRONLY)))\nprint(os.stat("/sandbox/disk").st_uid)';
    const r = runInSandbox(pySyscall(body), ['--workspace', ws]);
    expect(r.stderr).toBe('');
    // EACCES from the nodev mount; and the hand-over of the workspace left the node to root
    // (65534 inside: host root is not mapped), while the workspace itself became the sandbox's.
    expect(r.stdout.trim().split('\n')).toEqual(['EACCES', '65534']);
    expect(statSync(join(ws, 'disk')).uid).toBe(0);
    expect(statSync(ws).uid).toBeGreaterThanOrEqual(3_000_000);
    // Baseline: on the host, the same node opens for writing (as root, its owner).
    expect(
      runOnHost(pySyscall(`attempt(lambda: os.close(os.open("${ws}/disk", os.O_WRONLY)))`), 0).stdout.trim(),
    ).toBe('ok');
  });
});

describe('setuid files', () => {
  /** A setuid-root copy of id(1) in `dir`: `id -u` prints the effective uid. */
  function plantSetuidId(dir: string): string {
    const path = join(dir, 'suid-id');
    copyFileSync('/usr/bin/id', path);
    chownSync(path, 0, 0);
    chmodSync(path, 0o4755);
    return path;
  }

  it('a setuid-root binary planted in the workspace does not give root', () => {
    const home = freshHome();
    const ws = sharedTempDir('carapace-ws-');
    // A named sandbox keeps its uid, so the second run does not hand the workspace over again
    // (which would clear the setuid bit): the binary is still setuid root when the agent runs it.
    expect(runInSandbox(['true'], ['--name', 'suid', '--workspace', ws], home).status).toBe(0);
    const suid = plantSetuidId(ws);
    const r = runInSandbox(
      ['sh', '-c', 'stat -c %a /sandbox/suid-id; /sandbox/suid-id -u; grep NoNewPrivs /proc/self/status'],
      ['--name', 'suid', '--workspace', ws],
      home,
    );
    expect(r.stderr).toBe('');
    expect(r.stdout.trim().split('\n')).toEqual(['4755', '1000', 'NoNewPrivs:\t1']);
    expect(statSync(suid).mode & 0o4000).toBe(0o4000);
    // Baseline: the same binary run by an unprivileged host user is root.
    const shared = sharedTempDir();
    const hostCopy = plantSetuidId(shared);
    expect(runOnHost([hostCopy, '-u']).stdout.trim()).toBe('0');
  });

  it('handing a workspace to a new sandbox clears the setuid bit of what it chowns', () => {
    const ws = sharedTempDir('carapace-ws-');
    const suid = plantSetuidId(ws);
    const r = runInSandbox(['stat', '-c', '%a %u', '/sandbox/suid-id'], ['--workspace', ws]);
    expect(r.stdout.trim()).toBe('755 1000');
    expect(statSync(suid).mode & 0o4000).toBe(0);
  });
});
