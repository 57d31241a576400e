/**
 * Crashes leave nothing behind (docs/sandbox.md, "`carapace run`"). `kill -9` of a `carapace run`
 * takes its sandbox with it (bwrap's --die-with-parent), and the next Carapace command sweeps what
 * the dead run had made on the host: cgroups, the runtime and proxy-socket directories, the lock,
 * the temporary workspace and storage, the uid record; the run's audit file gets a "lost" event,
 * since the dead run never wrote its stop event.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { cgroupParent } from '../../src/sandbox/cgroup/cgroup.js';
import { LIMIT_CONTROLLERS, readCgroupLayout } from '../../src/sandbox/cgroup/cgroup-layout.js';
import type { RunRecord } from '../../src/sandbox/sandbox-lock.js';
import { carapace, freshHome } from '../helpers/cli.js';
import { requires } from '../helpers/premises.js';
import { hostUidRecords, policyFile, readAudit, startInSandbox } from '../helpers/sandbox.js';

const POLICY = `version: 1
filesystem_policy:
  read_only: [/usr, /lib, /lib64, /bin, /etc]
  read_write: [/sandbox, /tmp]
limits: { pids: 64, memory: 256Mi }
network_policies: {}
`;

/** Waits for `check` to hold; the test's timeout is the only clock. */
async function until(check: () => boolean): Promise<void> {
  while (!check()) await sleep(20);
}

describe('kill -9 of carapace run', () => {
  it('the sandbox dies with it, and the next run sweeps everything it left, with a "lost" audit event', async (ctx) => {
    requires(ctx, 'root'); // the cgroups for the limits
    const home = freshHome();
    const audit = join(home, 'audit.jsonl');
    const run = startInSandbox(['sleep', '600'], ['--policy', policyFile(POLICY), '--audit', audit], home);
    await until(() => existsSync(audit) && readAudit(audit).some((e) => e.message === 'seccomp applied'));

    const locks = join(home, 'run', 'sandboxes');
    const lockFile = readdirSync(locks).find((f) => f.endsWith('.lock'))!;
    const record = JSON.parse(readFileSync(join(locks, lockFile), 'utf8')) as RunRecord;
    const layout = readCgroupLayout();
    const cgroups = LIMIT_CONTROLLERS.filter((c) => c !== 'cpu')
      .map((c) => cgroupParent(c, layout))
      .filter((p) => p !== null)
      .map((p) => join(p.parent, record.cgroupKey!));
    expect(cgroups.length).toBeGreaterThan(0);
    const made = [record.runtime!, record.net!, record.tempWorkspace!, record.ephemeralStorage!, ...cgroups];
    for (const p of made) expect(existsSync(p)).toBe(true);
    expect(hostUidRecords(join(home, 'state')).map((r) => r.name)).toEqual([record.name]);

    run.child.kill('SIGKILL');
    await run.result;
    // The sandbox's processes die with it: its cgroups empty out.
    const procs = (dir: string) => readFileSync(join(dir, 'cgroup.procs'), 'utf8').trim();
    await until(() => cgroups.every((d) => procs(d) === ''));
    // What it made is still there until someone sweeps.
    for (const p of [...made, join(locks, lockFile)]) expect(existsSync(p)).toBe(true);

    const next = carapace(['run', '--', 'true'], { home });
    expect(next.status).toBe(0);
    expect(next.stderr).toMatch(
      new RegExp(`swept sandbox ${record.name} left by a carapace process that died`),
    );
    for (const p of [...made, join(locks, lockFile)]) expect(existsSync(p)).toBe(false);
    expect(hostUidRecords(join(home, 'state'))).toEqual([]);
    const lost = readAudit(audit).filter((e) => e.class_uid === 6002 && e.activity_id === 99);
    expect(lost).toHaveLength(1);
    expect(lost[0]!.message).toMatch(`sandbox ${record.name} lost`);
  });
});
