/**
 * useradd / userdel on the host, for tests that need a user or a host rename of /etc/passwd. Test
 * files run in parallel, and each of these locks /etc/passwd while it works: a run that finds the
 * lock held waits and tries again instead of failing.
 */
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';

const TRIES = 40;
const PAUSE_MS = 250;

export function hostUserCommand(
  command: 'useradd' | 'userdel' | 'groupadd',
  args: string[],
): SpawnSyncReturns<string> {
  let r = spawnSync(command, args, { encoding: 'utf8' });
  for (let i = 1; i < TRIES && r.status !== 0 && /lock/i.test(r.stderr); i++) {
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, PAUSE_MS);
    r = spawnSync(command, args, { encoding: 'utf8' });
  }
  return r;
}
