/**
 * Measurements, printed and not asserted (the machine is shared): the host memory of PID 1 with
 * its relay in an idle sandbox, and spawn -> exec latency against a bare bwrap running /bin/true.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { startHostProxy } from './host-proxy.js';
import {
  bwrapArguments,
  FIRST_EXTRA_FD,
  SANDBOX_UID,
  startSandbox,
  USUAL_PATHS,
  workDir,
} from './harness.js';

const RUNS = 30;

function statusKiB(pid: number, field: string): number {
  const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(match?.[1] ?? NaN);
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? NaN;
}

/** Milliseconds from spawn to exit of bwrap with `args`, as the sandbox uid. */
function timeRun(args: string[]): Promise<number> {
  const started = process.hrtime.bigint();
  const child = spawn('bwrap', args, { uid: SANDBOX_UID, gid: SANDBOX_UID, stdio: 'ignore' });
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('exit', (code) => {
      if (code !== 0) reject(new Error(`bwrap exited ${code}`));
      resolve(Number(process.hrtime.bigint() - started) / 1e6);
    });
  });
}

describe('measurements', () => {
  it('host RSS of PID 1 and its relay, idle and after serving connections', async () => {
    const proxy = await startHostProxy((c) => c.socket.end());
    try {
      const script = `
import socket, sys, time
print('idle', flush=True)
sys.stdin.readline()
for _ in range(200):
    s = socket.create_connection(('127.0.0.1', 3128))
    s.recv(1)
    s.close()
print('served', flush=True)
sys.stdin.readline()
`;
      const sandbox = startSandbox({
        init: [...USUAL_PATHS, '--ro', '/w', '--relay-dir-fd', String(FIRST_EXTRA_FD)],
        fds: [proxy.dirFd],
        work: workDir({ 'client.py': script }),
        command: ['python3', '/w/client.py'],
        stdin: null,
      });
      const init = await sandbox.initPid;
      const bwrapMonitor = sandbox.child.pid ?? 0;
      await sandbox.waitForStdout('idle');
      const idle = {
        rss: statusKiB(init, 'VmRSS'),
        anon: statusKiB(init, 'RssAnon'),
        file: statusKiB(init, 'RssFile'),
      };
      sandbox.child.stdin?.write('\n');
      await sandbox.waitForStdout('served');
      const served = statusKiB(init, 'VmRSS');
      const monitor = statusKiB(bwrapMonitor, 'VmRSS');
      sandbox.child.stdin?.end('\n');
      const r = await sandbox.result;
      expect(r.code).toBe(0);
      console.log(
        [
          'host memory of the sandbox processes (KiB)',
          `  carapace-init (PID 1 + relay), idle:     VmRSS ${idle.rss} (anon ${idle.anon}, file ${idle.file})`,
          `  carapace-init after 200 connections:      VmRSS ${served}`,
          `  bwrap monitor outside the sandbox:         VmRSS ${monitor}`,
        ].join('\n'),
      );
    } finally {
      await proxy.close();
    }
  });

  it('spawn -> exec latency, against bare bwrap /bin/true', async () => {
    const bare = bwrapArguments({ command: ['/bin/true'] });
    // The same sandbox without init: drop init's bind and run /bin/true directly.
    const separator = bare.indexOf('--');
    const bareArgs = [
      ...bare.slice(0, separator).filter((a, i, all) => a !== '--info-fd' && all[i - 1] !== '--info-fd'),
      '--',
      '/bin/true',
    ];
    const withInit = bwrapArguments({ init: USUAL_PATHS, command: ['/bin/true'] }).filter(
      (a, i, all) =>
        !(
          a === '--info-fd' ||
          all[i - 1] === '--info-fd' ||
          a === '--status-fd' ||
          all[i - 1] === '--status-fd'
        ),
    );
    const bareTimes: number[] = [];
    const initTimes: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      bareTimes.push(await timeRun(bareArgs));
      initTimes.push(await timeRun(withInit));
    }
    const b = median(bareTimes);
    const w = median(initTimes);
    console.log(
      [
        `spawn -> exit of /bin/true, median of ${RUNS} runs (ms)`,
        `  bare bwrap:                         ${b.toFixed(2)}`,
        `  bwrap + carapace-init (Landlock):   ${w.toFixed(2)}  (${(w / b).toFixed(2)}x)`,
      ].join('\n'),
    );
    expect(initTimes).toHaveLength(RUNS);
  });
});
