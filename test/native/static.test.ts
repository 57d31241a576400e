/**
 * carapace-init runs inside the sandbox, whose filesystem is what the policy lists; a policy may
 * list no /lib at all. So the init (and the pump, which runs beside the proxy) is linked
 * statically: no loader, no library path, no LD_* variable is read from anywhere. So is
 * carapace-sendfd, which the gateway runs (as root) once per log rotation.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { REPO } from '../helpers/cli.js';
import { runSandbox } from './harness.js';
import { nativeBuild } from './native-build.js';

describe.runIf(nativeBuild() === 'release')('the release build of the native programs', () => {
  it.each(['carapace-init', 'carapace-pump', 'carapace-sendfd'])(
    '%s is static: ldd says "not a dynamic executable"',
    (name) => {
      const r = spawnSync('ldd', [`${REPO}/native/${name}`], { encoding: 'utf8' });
      expect(`${r.stdout}${r.stderr}`.trim()).toBe('not a dynamic executable');
      // And it is an ELF file at all (ldd says the same of a file that is not one).
      expect(readFileSync(`${REPO}/native/${name}`).subarray(0, 4)).toEqual(Buffer.from('\x7fELF', 'latin1'));
    },
  );

  it('carapace-sendfd: one line on misuse (2) and on a socket it cannot reach (1)', () => {
    const sendfd = `${REPO}/native/carapace-sendfd`;
    const noFd = spawnSync(sendfd, ['/nonexistent.sock', '{"op":"log"}'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    expect(noFd.status).toBe(2);
    expect(noFd.stderr).toBe('carapace-sendfd: fd 3 (the descriptor to send): Bad file descriptor\n');
    const gone = spawnSync(sendfd, ['/nonexistent.sock', '{"op":"log"}'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
    });
    expect(gone.status).toBe(1);
    expect(gone.stderr).toBe('carapace-sendfd: connect to the control socket: No such file or directory\n');
    expect(gone.stdout).toBe('');
  });

  it('starts, and runs a static agent, in a sandbox holding nothing of the host but the init', async () => {
    // The agent is the init itself in --probe mode: a program that needs no library either.
    const r = await runSandbox({
      root: 'init-only',
      init: ['--ro', '/.carapace'],
      command: ['/.carapace/init', '--probe'],
    });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ seccomp_filter: true });
    expect(r.status.map((e) => e.event)).toEqual(['relay', 'rlimits', 'landlock', 'seccomp', 'exec']);
  });
});
