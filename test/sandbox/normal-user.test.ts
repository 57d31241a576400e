/**
 * A normal user's first run (issue 9): a freshly created non-root user on a host where cgroups are
 * not delegated runs the default policy (its pids limit falls back to RLIMIT_NPROC, with one
 * warning line), a workspace in their home works, `carapace doctor` says limits cannot be
 * enforced and how to get them, and a cgroup subtree root makes for them is then used.
 */
import { spawn, spawnSync } from 'node:child_process';
import {
  accessSync,
  constants,
  mkdirSync,
  chownSync,
  existsSync,
  readFileSync,
  rmdirSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readCgroupLayout } from '../../src/sandbox/cgroup/cgroup-layout.js';
import { CLI } from '../helpers/cli.js';
import { until } from '../helpers/gateway.js';
import { hostUserCommand } from '../helpers/host-users.js';
import { holds, requires } from '../helpers/premises.js';

const user = `cpt${process.pid % 100000}`;
let uid = -1;
let home = '';

const userEnv = (extra: Record<string, string> = {}) => ({
  PATH: '/usr/local/bin:/usr/bin:/bin',
  HOME: home,
  LANG: 'C.UTF-8',
  USER: user,
  ...extra,
});

function asUser(args: string[], extra: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, [CLI, ...args], {
    uid,
    gid: uid,
    cwd: home,
    encoding: 'utf8',
    timeout: 60_000,
    env: userEnv(extra),
  });
  return { status: r.status, stdout: String(r.stdout), stderr: String(r.stderr) };
}

describe('a freshly created normal user', () => {
  beforeAll(() => {
    if (!holds('root', 'checkout-reachable')) return;
    const made = hostUserCommand('useradd', ['--create-home', '--shell', '/bin/sh', user]);
    if (made.status !== 0) throw new Error(`useradd ${user}: ${made.stderr}`);
    uid = Number(spawnSync('id', ['-u', user], { encoding: 'utf8' }).stdout.trim());
    home = `/home/${user}`;
  });
  afterAll(() => {
    if (uid >= 0) hostUserCommand('userdel', ['--remove', user]);
  });

  const premise = (ctx: Parameters<typeof requires>[0]) => {
    requires(ctx, 'root', 'checkout-reachable'); // to create the user, who then runs this checkout
  };

  it('runs the default policy, with one warning line when no cgroup can be had, and a workspace in its home', (ctx) => {
    premise(ctx);
    const r = asUser(['run', '--', 'id', '-u']);
    expect(r.status).toBe(0);
    expect(r.stdout.trim()).toBe('1000');
    const warnings = r.stderr.split('\n').filter(Boolean);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(
      /^carapace: warning: no cgroup for the default policy's limits .*RLIMIT_NPROC/,
    );
    const ws = asUser(['run', '--workspace', join(home, 'ws'), '--', 'sh', '-c', 'echo hi > /sandbox/f']);
    expect(ws.status).toBe(0);
    expect(readFileSync(join(home, 'ws', 'f'), 'utf8')).toBe('hi\n');
    // Limits the user wrote themselves still refuse, in one line.
    const policy = join(home, 'limits.yaml');
    writeFileSync(
      policy,
      'version: 1\nfilesystem_policy:\n  read_only: [/usr, /lib, /lib64, /bin, /etc]\n  read_write: [/sandbox, /tmp]\nlimits: { pids: 64 }\n',
    );
    chownSync(policy, uid, uid);
    const own = asUser(['run', '--policy', policy, '--', 'true']);
    expect(own.status).not.toBe(0);
    expect(own.stderr.trim().split('\n')).toHaveLength(1);
    expect(own.stderr).toMatch(/cannot apply the pids limit: uid \d+ has no cgroup/);
  });

  it('hears the truth from carapace doctor, and gets a cgroup once root delegates one', (ctx) => {
    premise(ctx);
    const layout = readCgroupLayout();
    const report = JSON.parse(asUser(['doctor', '--json']).stdout) as {
      capabilities: { id: string; status: string; detail: string; fix?: string }[];
    };
    const cgroup = report.capabilities.find((c) => c.id === 'cgroup')!;
    expect(cgroup.status).toBe('degraded');
    expect(cgroup.detail).toMatch(new RegExp(`uid ${uid} cannot make cgroups for .*pids`));
    const pidsV1 = layout.v1Mounts.pids;
    if (!pidsV1 || layout.v2Controllers.includes('pids'))
      return ctx.skip(
        'the pids controller is on cgroup v2 here: delegation is systemd’s (Delegate=yes), not tested',
      );
    const dir = join(pidsV1, 'carapace', `user-${uid}`);
    expect(cgroup.fix).toContain(`mkdir -p `);
    expect(cgroup.fix).toContain(dir);
    mkdirSync(dir, { recursive: true });
    chownSync(dir, uid, uid);
    try {
      accessSync(dir, constants.W_OK);
      const r = asUser(['run', '--', 'sh', '-c', 'cat /proc/self/cgroup']);
      expect(r.status).toBe(0);
      expect(r.stderr).toBe('');
      expect(r.stdout).toMatch(new RegExp(`pids:.*/carapace/user-${uid}/run-[0-9a-f]+\\.[0-9a-f]{8}$`, 'm'));
    } finally {
      rmdirSync(dir);
    }
  });
  it("gets the same warning from its own rootless gateway's run, which has no cgroup either", async (ctx) => {
    premise(ctx);
    requires(ctx, 'unprivileged-userns'); // a rootless gateway's sandboxes are the user's own bwrap
    const runtimeDir = join(home, 'xdg-run');
    mkdirSync(runtimeDir, { mode: 0o700 });
    chownSync(runtimeDir, uid, uid);
    const env = { XDG_RUNTIME_DIR: runtimeDir };
    const gateway = spawn(process.execPath, [CLI, 'gateway', 'run'], {
      uid,
      gid: uid,
      cwd: home,
      env: userEnv(env),
      stdio: 'ignore',
    });
    try {
      await until('the rootless gateway listens', () =>
        existsSync(join(runtimeDir, 'carapace', 'gateway.sock')),
      );
      const r = asUser(['run', '--', 'id', '-u'], env);
      expect(r.stdout.trim()).toBe('1000');
      expect(r.status).toBe(0);
      const warnings = r.stderr.split('\n').filter(Boolean);
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toMatch(
        /^carapace: warning: no cgroup for the default policy's limits \(.*pids: .*RLIMIT_NPROC caps the sandbox's processes instead/,
      );
      // Served by the gateway, not by a sandbox of the command's own process.
      const runs = readFileSync(join(home, '.local', 'state', 'carapace', 'audit', 'runs.jsonl'), 'utf8');
      expect(runs).toContain(`run by uid ${uid}: id -u`);
    } finally {
      gateway.kill('SIGTERM');
      await new Promise((resolve) => gateway.once('exit', resolve));
    }
  });
});
