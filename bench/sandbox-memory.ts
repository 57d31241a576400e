/**
 * Memory: what an idle sandbox costs the host, and how many fit.
 *
 * - Per sandbox: VmRSS of carapace-init (PID 1, with its relay listening to a host socket), with
 *   the agent an idle `sleep` (whose own VmRSS is the baseline: the smallest process there is);
 *   bwrap's monitor process outside the sandbox is reported beside it. Target: init ≤ 3 MiB.
 * - Density: idle sandboxes (default policy, relay on) started one after another up to 200, each
 *   followed by a check that the host still runs a trivial process; the latency of that process
 *   with all of them up is compared with the same before any. Target: 200 fit.
 * Everything started here is stopped and removed at the end.
 */
import { chmodSync, closeSync, constants, mkdirSync, openSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { relayOnly, type StartedSandbox } from '../src/sandbox/sandbox.js';
import { agentStarted } from '../src/sandbox/launch/running-sandbox.js';
import type { BenchModule, BenchRow } from './framework.js';
import {
  benchHome,
  firstChild,
  median,
  startIn,
  statusKiB,
  timeSpawn,
  type BenchHome,
} from './sandbox-harness.js';

const DENSITY = 200;
const SINGLE = 5;
const TARGET_INIT_MIB = 3;
const O_PATH = 0o10000000;
const KiB_PER_MiB = 1024;

/** A host socket for the relays to reach (it accepts and drops): each init's relay is live. */
async function hostSocket(home: BenchHome): Promise<{ dirFd: number; close(): Promise<void> }> {
  const dir = join(home.dir, 'proxy');
  mkdirSync(dir, { mode: 0o711 });
  const server = createServer((s) => s.destroy());
  await new Promise<void>((resolve) => server.listen(join(dir, 'proxy.sock'), resolve));
  chmodSync(join(dir, 'proxy.sock'), 0o666);
  const dirFd = openSync(dir, O_PATH | constants.O_DIRECTORY);
  return {
    dirFd,
    close: () => {
      closeSync(dirFd);
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

async function startIdle(home: BenchHome, dirFd: number): Promise<StartedSandbox> {
  const s = await startIn(home, home.defaultPolicy, ['sleep', 'infinity'], {
    network: relayOnly(dirFd, 'proxy.sock'),
  });
  if (!(await agentStarted(s.process))) {
    s.cleanup();
    throw new Error(`idle sandbox did not start: ${JSON.stringify(s.process.events)}`);
  }
  return s;
}

async function stopAll(sandboxes: StartedSandbox[]): Promise<void> {
  for (const s of sandboxes) s.process.signal('SIGTERM'); // the init forwards it to sleep, then exits
  await Promise.all(sandboxes.map((s) => s.process.exited));
  for (const s of sandboxes) s.cleanup();
}

async function trivialSpawns(): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < 5; i++) times.push(await timeSpawn('/bin/true', []));
  return median(times);
}

async function run(): Promise<BenchRow[]> {
  const home = await benchHome();
  const host = await hostSocket(home);
  const running: StartedSandbox[] = [];
  try {
    const init: number[] = [];
    const monitor: number[] = [];
    const agent: number[] = [];
    for (let i = 0; i < SINGLE; i++) {
      const s = await startIdle(home, host.dirFd);
      running.push(s);
      await new Promise((r) => setTimeout(r, 100));
      init.push(statusKiB(s.process.initPid, 'VmRSS'));
      agent.push(statusKiB(firstChild(s.process.initPid), 'VmRSS'));
      monitor.push(statusKiB(s.process.child.pid ?? 0, 'VmRSS'));
    }
    await stopAll(running.splice(0));

    const before = await trivialSpawns();
    let responsive = true;
    while (running.length < DENSITY && responsive) {
      try {
        running.push(await startIdle(home, host.dirFd));
      } catch {
        break;
      }
      // A trivial process must still run to completion; a hung host would stop the bench here.
      responsive = (await Promise.race([
        timeSpawn('/bin/true', []).then(() => true),
        new Promise<boolean>((r) => setTimeout(() => r(false), 10_000)),
      ])) as boolean;
    }
    const fitted = running.length;
    const after = await trivialSpawns();
    let totalKiB = 0;
    for (const s of running)
      totalKiB += statusKiB(s.process.initPid, 'VmRSS') + statusKiB(s.process.child.pid ?? 0, 'VmRSS');
    const sleepKiB = median(agent);
    return [
      {
        name: 'host RSS per idle sandbox: carapace-init (PID 1 + relay)',
        value: median(init) / KiB_PER_MiB,
        unit: 'MiB',
        baseline: sleepKiB / KiB_PER_MiB,
        baselineName: 'the idle agent, sleep',
        target: { max: TARGET_INIT_MIB },
      },
      {
        name: 'host RSS per idle sandbox: bwrap monitor (outside the sandbox)',
        value: median(monitor) / KiB_PER_MiB,
        unit: 'MiB',
        baseline: sleepKiB / KiB_PER_MiB,
        baselineName: 'the idle agent, sleep',
      },
      {
        name: `idle sandboxes running with the host responsive (stops at ${DENSITY})`,
        value: fitted,
        unit: 'sandboxes',
        baseline: DENSITY,
        baselineName: 'asked for',
        target: { min: DENSITY },
      },
      {
        name: `host RSS of ${fitted} idle sandboxes (init + bwrap monitor)`,
        value: totalKiB / KiB_PER_MiB,
        unit: 'MiB',
        baseline: (fitted * sleepKiB) / KiB_PER_MiB,
        baselineName: `${fitted} × sleep`,
      },
      {
        name: `spawn → exit of /bin/true on the host with ${fitted} idle sandboxes`,
        value: after,
        unit: 'ms',
        baseline: before,
        baselineName: 'with none',
      },
    ];
  } finally {
    await stopAll(running);
    await host.close();
    home.remove();
  }
}

export const sandboxMemoryBench: BenchModule = { name: 'sandbox-memory', run };
