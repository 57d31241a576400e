/**
 * Failures: each names its step and errno on one stderr line and in an error status event, and
 * exits as env(1) does - 125 ours, 126 found but not runnable, 127 not found.
 */
import { describe, expect, it } from 'vitest';
import { events, runSandbox, USUAL_PATHS, type SandboxResult } from './harness.js';

function onlyError(r: SandboxResult): Record<string, unknown> {
  const errors = events(r, 'error');
  expect(errors).toHaveLength(1);
  return errors[0] as Record<string, unknown>;
}

describe('carapace-init failures', () => {
  it('127 when the command is not found in PATH, naming the command and the PATH searched', async () => {
    const r = await runSandbox({ init: USUAL_PATHS, command: ['no-such-command'] });
    expect(r.code).toBe(127);
    expect(r.stderr).toBe(
      'carapace-init: exec: no-such-command (searched PATH=/usr/bin:/bin): No such file or directory\n',
    );
    expect(onlyError(r)).toMatchObject({ step: 'exec', errno: 2 });
    // The exec event came first: the failure is the agent's command, not the sandbox set-up.
    expect(r.status.map((e) => e.event).slice(-2)).toEqual(['exec', 'error']);
  });

  it('127 for a missing absolute path', async () => {
    const r = await runSandbox({ init: USUAL_PATHS, command: ['/usr/bin/no-such-command'] });
    expect(r.code).toBe(127);
    expect(r.stderr).toBe('carapace-init: exec: /usr/bin/no-such-command: No such file or directory\n');
  });

  it('126 when the command exists but is not executable', async () => {
    const r = await runSandbox({ init: USUAL_PATHS, command: ['/etc/passwd'] });
    expect(r.code).toBe(126);
    expect(r.stderr).toBe('carapace-init: exec: /etc/passwd: Permission denied\n');
    expect(onlyError(r)).toMatchObject({
      step: 'exec',
      errno: 13,
      message: '/etc/passwd: Permission denied',
    });
  });

  it('126 when Landlock does not allow executing the command', async () => {
    const r = await runSandbox({ init: ['--ro', '/etc'], command: ['/usr/bin/true'] });
    expect(r.code).toBe(126);
    expect(r.stderr).toBe('carapace-init: exec: /usr/bin/true: Permission denied\n');
  });

  it('125 for a bad option, with the option named, before anything starts', async () => {
    const cases: [string[], string][] = [
      [['--relay-port', '99999'], "--relay-port: expected a number from 1 to 65535, got '99999'"],
      [['--landlock', 'sometimes'], "--landlock: expected best_effort or hard_requirement, got 'sometimes'"],
      [['--ro', 'relative/path'], "--ro: expected an absolute path, got 'relative/path'"],
      [['--frobnicate', '1'], "unknown option '--frobnicate'"],
      [['--nofile', '10', '--nofile', '20'], '--nofile given twice'],
    ];
    for (const [init, message] of cases) {
      const r = await runSandbox({ init, command: ['true'] });
      expect(r.code).toBe(125);
      expect(r.stderr).toBe(`carapace-init: options: ${message}\n`);
      expect(onlyError(r)).toEqual({ event: 'error', step: 'options', errno: 0, message });
      expect(events(r, 'exec')).toHaveLength(0);
    }
  });

  it('125 when an fd option names an fd that is not open', async () => {
    const r = await runSandbox({ init: ['--seccomp-fd', '9'], command: ['true'] });
    expect(r.code).toBe(125);
    expect(r.stderr).toBe('carapace-init: options: --seccomp-fd 9: Bad file descriptor\n');
    expect(onlyError(r)).toMatchObject({ step: 'options', errno: 9 });
  });

  it('125 when an rlimit cannot be set, naming the limit', async () => {
    // Above the hard limit bwrap inherited: the unprivileged sandbox user cannot raise it.
    const r = await runSandbox({ init: [...USUAL_PATHS, '--nofile', String(2 ** 30)], command: ['true'] });
    expect(r.code).toBe(125);
    expect(r.stderr).toBe('carapace-init: rlimits: setrlimit RLIMIT_NOFILE: Operation not permitted\n');
    expect(onlyError(r)).toMatchObject({ step: 'rlimits', errno: 1 });
  });

  it('refuses to run as anything but PID 1', async () => {
    const r = await runSandbox({
      init: [...USUAL_PATHS, '--ro', '/.carapace'],
      command: ['/.carapace/init', '--', 'true'],
    });
    expect(r.code).toBe(125);
    expect(r.stderr).toContain('carapace-init: pid1: must run as PID 1 of a new pid namespace');
  });

  it('writes only JSON lines on the status fd, in the order things are applied', async () => {
    const r = await runSandbox({ init: [...USUAL_PATHS, '--nofile', '64'], command: ['true'] });
    expect(r.code).toBe(0);
    expect(r.status.map((e) => e.event)).toEqual(['relay', 'rlimits', 'landlock', 'seccomp', 'exec']);
    expect(events(r, 'relay')[0]).toEqual({ event: 'relay', enabled: false });
    expect(events(r, 'rlimits')[0]).toEqual({ event: 'rlimits', core: 0, nofile: 64, nproc: null });
    expect(events(r, 'seccomp')[0]).toEqual({ event: 'seccomp', installed: false, instructions: 0 });
  });
});

describe('carapace-init --probe', () => {
  it('prints what the kernel can enforce', async () => {
    const r = await runSandbox({
      init: [...USUAL_PATHS, '--ro', '/.carapace'],
      command: ['/.carapace/init', '--probe'],
    });
    expect(r.code).toBe(0);
    const probe = JSON.parse(r.stdout) as { landlock_abi: number; seccomp_filter: boolean };
    expect(probe.landlock_abi).toBeGreaterThanOrEqual(1);
    expect(probe.seccomp_filter).toBe(true);
  });
});
