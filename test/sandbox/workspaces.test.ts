/**
 * Workspaces and --mount sources anywhere (issue 9): they are opened by the launching user and
 * handed to bwrap as descriptors, so a workspace under a parent only root may search works, with
 * no host directory's mode changed and nothing mounted on the host.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CLI, carapace, freshHome } from '../helpers/cli.js';
import { requires } from '../helpers/premises.js';
import { HOST_NOBODY, runInSandbox, sharedTempDir } from '../helpers/sandbox.js';

/** A directory only root may search (0700), with a data directory in it: like /root/p. */
function privateParent(): string {
  const p = join(sharedTempDir(), 'p');
  mkdirSync(p, { mode: 0o700 });
  mkdirSync(join(p, 'data'));
  writeFileSync(join(p, 'data', 'f'), 'data\n');
  return p;
}

const hostMounts = () => readFileSync('/proc/self/mountinfo', 'utf8');

describe('a workspace or --mount under a parent the sandbox uid cannot search', () => {
  it('--workspace p/ws under a 0700 p works, and p stays 0700', (ctx) => {
    requires(ctx, 'root');
    const p = privateParent();
    const r = runInSandbox(
      ['sh', '-c', 'echo ok > /sandbox/o && cat /sandbox/o'],
      ['--workspace', join(p, 'ws')],
    );
    expect({ status: r.status, stdout: r.stdout, stderr: r.stderr }).toEqual({
      status: 0,
      stdout: 'ok\n',
      stderr: '',
    });
    expect(readFileSync(join(p, 'ws', 'o'), 'utf8')).toBe('ok\n');
    expect(statSync(p).mode & 0o777).toBe(0o700);
    expect(hostMounts()).not.toContain(p);
  });

  it('a relative --workspace ./ws from inside p', (ctx) => {
    requires(ctx, 'root');
    const p = privateParent();
    const r = carapace(['run', '--workspace', './ws', '--', 'sh', '-c', 'echo rel > /sandbox/o'], {
      home: freshHome(),
      cwd: p,
    });
    expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: '' });
    expect(readFileSync(join(p, 'ws', 'o'), 'utf8')).toBe('rel\n');
  });

  it('--mount p/data:/data:ro under a 0700 p works, read-only, and p stays 0700', (ctx) => {
    requires(ctx, 'root');
    const p = privateParent();
    const r = runInSandbox(
      ['sh', '-c', 'cat /data/f; echo x > /data/g || echo refused'],
      ['--mount', `${join(p, 'data')}:/data:ro`],
    );
    expect(r.status).toBe(0);
    expect(r.stdout).toBe('data\nrefused\n');
    expect(r.stderr).toMatch(/Read-only file system/);
    expect(statSync(p).mode & 0o777).toBe(0o700);
    expect(hostMounts()).not.toContain(p);
  });

  it('a writable --mount of a single file under a 0700 parent', (ctx) => {
    requires(ctx, 'root');
    const p = privateParent();
    chmodSync(join(p, 'data', 'f'), 0o666); // a mount is the host's file: its modes still apply
    const r = runInSandbox(
      ['sh', '-c', 'cat /f && echo more >> /f'],
      ['--mount', `${join(p, 'data', 'f')}:/f`],
    );
    expect({ status: r.status, stdout: r.stdout, stderr: r.stderr }).toEqual({
      status: 0,
      stdout: 'data\n',
      stderr: '',
    });
    expect(readFileSync(join(p, 'data', 'f'), 'utf8')).toBe('data\nmore\n');
  });
});

describe('the launching user cannot reach the path (rootless)', () => {
  it('one line naming the directory that stops it', (ctx) => {
    requires(ctx, 'root', 'unprivileged-userns');
    const p = privateParent(); // root's 0700: the unprivileged user cannot pass it
    const home = freshHome();
    chmodSync(home, 0o755);
    chownSync(home, HOST_NOBODY, HOST_NOBODY);
    const r = spawnSync(
      process.execPath,
      [CLI, 'run', '--best-effort-limits', '--workspace', join(p, 'ws'), '--', 'true'],
      {
        encoding: 'utf8',
        uid: HOST_NOBODY,
        gid: HOST_NOBODY,
        cwd: '/',
        env: { PATH: process.env.PATH, CARAPACE_HOME: home },
        timeout: 60_000,
      },
    );
    expect(r.status).toBe(2);
    expect(r.stderr).toBe(
      `carapace: uid ${HOST_NOBODY} cannot reach ${join(p, 'ws')}: ${p} is not searchable by it ` +
        `(chmod o+x ${p}, or use a path elsewhere)\n`,
    );
    // The same for a --mount source: one line, never bwrap's and then a cgroup error.
    const m = spawnSync(
      process.execPath,
      [CLI, 'run', '--best-effort-limits', '--mount', `${join(p, 'data')}:/data:ro`, '--', 'true'],
      {
        encoding: 'utf8',
        uid: HOST_NOBODY,
        gid: HOST_NOBODY,
        cwd: '/',
        env: { PATH: process.env.PATH, CARAPACE_HOME: home },
        timeout: 60_000,
      },
    );
    expect(m.status).toBe(2);
    expect(m.stderr).toBe(
      `carapace: uid ${HOST_NOBODY} cannot reach ${join(p, 'data')}: ${p} is not searchable by it ` +
        `(chmod o+x ${p}, or use a path elsewhere)\n`,
    );
  });
});

describe('--mount of the host root', () => {
  it('writable: refused with one line (every host path would become the sandbox’s to plant in)', () => {
    const r = carapace(['run', '--mount', '/:/host', '--', 'true'], { home: freshHome() });
    expect(r.status).toBe(2);
    expect(r.stderr).toBe(
      `carapace: --mount "/:/host": the host's root can only be mapped read-only (add :ro)\n`,
    );
  });
});
