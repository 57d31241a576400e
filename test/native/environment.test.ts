/**
 * --env-fd: the agent's environment arrives on a file descriptor, "NAME=VALUE\0" entries read to
 * end of file, and is used for the agent's execve only. PID 1's own environment (here, what bwrap
 * was given) is not the agent's.
 */
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { events, FIRST_EXTRA_FD, runSandbox, USUAL_PATHS, type SandboxResult } from './harness.js';

const scratch = mkdtempSync(join(tmpdir(), 'carapace-env-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

async function withEnvironment(
  bytes: Buffer | string,
  command: string[],
  bwrap: string[] = [],
): Promise<SandboxResult> {
  const file = join(scratch, `env-${Math.random().toString(36).slice(2)}`);
  writeFileSync(file, bytes);
  const fd = openSync(file, 'r');
  try {
    return await runSandbox({
      init: [...USUAL_PATHS, '--env-fd', String(FIRST_EXTRA_FD)],
      fds: [fd],
      bwrap,
      command,
    });
  } finally {
    closeSync(fd);
  }
}

const entries = (env: Record<string, string>) =>
  Object.entries(env)
    .map(([k, v]) => `${k}=${v}\0`)
    .join('');

describe('the agent environment from --env-fd', () => {
  it("is the agent's whole environment; PID 1's own does not reach it", async () => {
    const r = await withEnvironment(
      entries({ PATH: '/usr/bin', GREETING: 'hello world', EMPTY: '', 'WITH=SIGN': 'a=b' }),
      ['/usr/bin/env', '-0'],
      ['--setenv', 'INIT_ONLY', 'must not reach the agent'],
    );
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('PATH=/usr/bin\0GREETING=hello world\0EMPTY=\0WITH=SIGN=a=b\0');
  });

  it("searches the command in the agent's PATH, not PID 1's", async () => {
    // PID 1 has PATH=/usr/bin:/bin (the harness); the agent's PATH has neither, so `true` is not found.
    const r = await withEnvironment(entries({ PATH: '/nonexistent' }), ['true']);
    expect(r.code).toBe(127);
    expect(r.stderr).toBe(
      'carapace-init: exec: true (searched PATH=/nonexistent): No such file or directory\n',
    );
  });

  it('may be empty', async () => {
    const r = await withEnvironment('', ['/usr/bin/env']);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('');
  });

  it.each([
    ['an entry without =', 'GOOD=1\0NOEQUALS\0', 'entry 2 on --env-fd 5 is not NAME=VALUE: Invalid argument'],
    ['an empty name', '=value\0', 'entry 1 on --env-fd 5 is not NAME=VALUE: Invalid argument'],
    [
      'a last entry without its NUL',
      'A=1\0B=2',
      'the environment on --env-fd 5 does not end with a NUL byte: Invalid argument',
    ],
  ])('refuses %s before anything runs (exit 125)', async (_what, bytes, message) => {
    const r = await withEnvironment(bytes, ['true']);
    expect(r.code).toBe(125);
    expect(r.stderr).toBe(`carapace-init: environment: ${message}\n`);
    expect(events(r, 'error')).toEqual([{ event: 'error', step: 'environment', errno: 22, message }]);
    expect(events(r, 'exec')).toEqual([]);
  });

  it('refuses more than 4 MiB', async () => {
    const r = await withEnvironment(`BIG=${'x'.repeat(4 * 1024 * 1024)}\0`, ['true']);
    expect(r.code).toBe(125);
    expect(r.stderr).toBe(
      'carapace-init: environment: the environment on --env-fd 5 is larger than 4194304 bytes: Argument list too long\n',
    );
  });
});
