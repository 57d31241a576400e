/**
 * `exec -- true` in a running sandbox through its control socket (src/sandbox/control/control.ts: connect,
 * request, fork, the agent's restrictions, execve, EXIT), the round trip a gateway pays for each
 * `sandbox exec`, against what it would cost otherwise, measured in the same run and interleaved:
 * a fresh bare `bwrap … /bin/true` (a new sandbox per command), and a plain fork+exec of
 * /bin/true on the host (Node's spawn to exit, no sandbox at all). Target: an exec costs less than
 * a fresh sandbox.
 */
import { SandboxControl } from '../src/sandbox/control/control.js';
import { agentStarted } from '../src/sandbox/launch/running-sandbox.js';
import type { BenchModule, BenchRow } from './framework.js';
import { BARE_BWRAP, BARE_UID, benchHome, median, startIn, timeSpawn } from './sandbox-harness.js';

const RUNS = 200;
const WARMUP = 20;

async function execTrue(control: SandboxControl): Promise<number> {
  const t0 = process.hrtime.bigint();
  const p = control.exec({ argv: ['/bin/true'] });
  p.stdout.resume();
  p.stderr.resume();
  const code = await p.exited;
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (code !== 0) throw new Error(`exec /bin/true exited ${code}: ${p.failure ?? ''}`);
  return ms;
}

async function run(): Promise<BenchRow[]> {
  const home = await benchHome();
  const started = await startIn(home, home.defaultPolicy, ['sleep', 'infinity'], { control: true });
  try {
    if (!(await agentStarted(started.process))) throw new Error('the sandbox did not start');
    const control = started.control!;
    const exec: number[] = [];
    const bare: number[] = [];
    const host: number[] = [];
    for (let i = 0; i < WARMUP + RUNS; i++) {
      const e = await execTrue(control);
      // A fresh sandbox and a host spawn are slower and steadier: one of each per five execs.
      const b = i % 5 === 0 ? await timeSpawn('bwrap', BARE_BWRAP, BARE_UID) : NaN;
      const h = i % 5 === 0 ? await timeSpawn('/bin/true', [], BARE_UID) : NaN;
      if (i < WARMUP) continue;
      exec.push(e);
      if (!Number.isNaN(b)) bare.push(b);
      if (!Number.isNaN(h)) host.push(h);
    }
    const value = median(exec);
    const name = `exec -- /bin/true through the control socket, p50 of ${RUNS}`;
    return [
      {
        name,
        value,
        unit: 'ms',
        baseline: median(bare),
        baselineName: `a fresh bare bwrap /bin/true, p50 of ${bare.length}`,
        target: { max: median(bare) },
      },
      {
        name,
        value,
        unit: 'ms',
        baseline: median(host),
        baselineName: `fork+exec /bin/true on the host (Node spawn), p50 of ${host.length}`,
      },
    ];
  } finally {
    started.process.signal('SIGKILL');
    await started.process.exited;
    await started.cleanup();
    home.remove();
  }
}

export const sandboxExecBench: BenchModule = { name: 'sandbox-exec', run };
