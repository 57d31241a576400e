import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { readCgroupLayout } from '../src/sandbox/cgroup/cgroup-layout.js';
import { carapace } from './helpers/cli.js';

describe('carapace doctor', () => {
  it('reports every capability of this host, and exits 0 when the sandbox can run', () => {
    const r = carapace(['doctor', '--json']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const report = JSON.parse(r.stdout) as {
      carapace: { version: string; node: { version: string; path: string } };
      capabilities: { id: string; status: string; detail: string }[];
      landlockAbi: number;
    };
    expect(report.capabilities.map((c) => c.id)).toEqual([
      'node',
      'bwrap',
      'userns',
      'landlock',
      'seccomp',
      'cgroup',
      'cgroup-migration',
      'tcp-hash',
      'process-tree',
      'disk',
    ]);
    // What this host has, as the suite's own probe found it (test/helpers/host-probe.ts).
    expect(report.capabilities.find((c) => c.id === 'process-tree')?.status).toBe(
      existsSync(`/proc/${process.pid}/task/${process.pid}/children`) ? 'ok' : 'degraded',
    );
    // The Node it runs on: here the one the test spawned it with, Carapace's own under npm test.
    expect(report.carapace.node).toEqual({ version: process.version, path: process.execPath });
    expect(report.capabilities[0]).toMatchObject({
      status: 'ok',
      detail: expect.stringContaining(process.execPath),
    });
    expect(report.carapace.version).toMatch(/^\d+\.\d+\.\d+/);
    expect(report.landlockAbi).toBeGreaterThanOrEqual(1);
    expect(report.capabilities.find((c) => c.id === 'bwrap')?.status).toBe('ok');
  });

  it('says what breaks and how to fix it when bwrap is missing', () => {
    const r = carapace(['doctor'], { env: { PATH: '/nonexistent' } });
    expect(r.status).toBe(1);
    expect(r.stdout).toMatch(/FAIL\s+bubblewrap/);
    expect(r.stdout).toMatch(/fix:\s+apt-get install bubblewrap/);
  });

  it('says first which Node.js and which carapace it is', () => {
    const first = carapace(['doctor']).stdout.split('\n')[0];
    expect(first).toMatch(/^ok\s+Node\.js\s+v\d+/);
    expect(first).toContain(`${process.version} at ${process.execPath} (carapace `);
  });
});

describe('cgroup layout', () => {
  it('finds v1 controllers and the v2 mount from /proc/self/mounts', () => {
    const layout = readCgroupLayout(
      [
        'cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0',
        'cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,cpu,cpuacct 0 0',
        'cgroup /sys/fs/cgroup/systemd cgroup rw,relatime,name=systemd 0 0',
        'cgroup2 /nonexistent/unified cgroup2 rw 0 0',
      ].join('\n'),
    );
    expect(layout.v1Mounts).toEqual({
      memory: '/sys/fs/cgroup/memory',
      cpu: '/sys/fs/cgroup/cpu,cpuacct',
      cpuacct: '/sys/fs/cgroup/cpu,cpuacct',
    });
    expect(layout.v2Mount).toBe('/nonexistent/unified');
    expect(layout.v2Controllers).toEqual([]);
    expect(layout.favorDynmods).toBe(false);
  });

  it('sees favordynmods on any hierarchy, and does not take v1 options for controllers', () => {
    const layout = readCgroupLayout(
      [
        'cgroup /sys/fs/cgroup/pids cgroup rw,relatime,pids,clone_children,xattr 0 0',
        'cgroup2 /nonexistent/unified cgroup2 rw,relatime,favordynmods 0 0',
      ].join('\n'),
    );
    expect(layout.v1Mounts).toEqual({ pids: '/sys/fs/cgroup/pids' });
    expect(layout.favorDynmods).toBe(true);
  });
});
