/**
 * Sandbox start: from startSandbox() to the agent's execve, against a bare bwrap with the same
 * namespaces running /bin/true (spawn to exit), measured in the same run, interleaved, both as
 * unprivileged uids. Target: ≤ 1.5× bare bwrap.
 *
 * Two Carapace rows: a policy with no limits (what bare bwrap compares with: namespaces, mounts,
 * Landlock, seccomp, the init), and the default policy, whose pids limit adds a cgroup. Entering a
 * cgroup costs the kernel one RCU grace period (cgroup_threadgroup_rwsem) unless a hierarchy is
 * mounted with favordynmods, which ./install.sh sets; the row says which case this host is in.
 */
import { readCgroupLayout } from '../src/sandbox/cgroup/cgroup-layout.js';
import type { BenchModule, BenchRow } from './framework.js';
import { BARE_BWRAP, BARE_UID, benchHome, median, timeSpawn, timeStart } from './sandbox-harness.js';

const RUNS = 40;
const WARMUP = 5;
const TARGET_RATIO = 1.5;

async function run(): Promise<BenchRow[]> {
  const home = await benchHome({ runOnTmpfs: true });
  try {
    const bare: number[] = [];
    const plain: number[] = [];
    const limited: number[] = [];
    for (let i = 0; i < WARMUP + RUNS; i++) {
      const b = await timeSpawn('bwrap', BARE_BWRAP, BARE_UID);
      const p = await timeStart(home, home.noLimits);
      const l = await timeStart(home, home.defaultPolicy);
      if (i < WARMUP) continue;
      bare.push(b);
      plain.push(p);
      limited.push(l);
    }
    const baseline = median(bare);
    const migration = readCgroupLayout().favorDynmods ? 'favordynmods' : 'no favordynmods';
    const base = { unit: 'ms', baseline, baselineName: 'bare bwrap /bin/true' };
    return [
      {
        name: `start → exec, no limits (median of ${RUNS})`,
        value: median(plain),
        ...base,
        target: { max: TARGET_RATIO * baseline },
      },
      {
        name: `start → exec, default policy: pids cgroup, ${migration} (median of ${RUNS})`,
        value: median(limited),
        ...base,
        target: { max: TARGET_RATIO * baseline },
      },
    ];
  } finally {
    home.remove();
  }
}

export const sandboxStartBench: BenchModule = { name: 'sandbox-start', run };
