/**
 * treeUsage: what a process tree used, read from the host's /proc, as /metrics, term and the
 * dashboard show it for a sandbox. Bounded however many threads the tree holds.
 */
import { spawn } from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import { treeUsage } from '../../src/sandbox/processes.js';
import { requires } from '../helpers/premises.js';

const started: number[] = [];
afterEach(() => {
  for (const pid of started.splice(0)) {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
});

/** python3 running `code`, its own process group; resolves once it printed "ready". */
function python(code: string): Promise<number> {
  const c = spawn('python3', ['-c', code], { stdio: ['ignore', 'pipe', 'inherit'], detached: true });
  started.push(c.pid as number);
  return new Promise((resolve, reject) => {
    let out = '';
    c.stdout.on('data', (d: Buffer) => {
      out += String(d);
      if (out.includes('ready')) resolve(c.pid as number);
    });
    c.once('exit', (code) => reject(new Error(`python3 exited ${code}`)));
  });
}

describe('treeUsage', () => {
  it("counts a reaped child's CPU, the live processes' memory, and is gone with the tree", async (ctx) => {
    requires(ctx, 'proc-children');
    const pid = await python(
      [
        'import subprocess, sys, time',
        'subprocess.run([sys.executable, "-c", "import time\\nend = time.process_time() + 0.3\\nwhile time.process_time() < end: pass"], check=True)',
        'held = bytearray(32 << 20)',
        'for i in range(0, len(held), 4096): held[i] = 1',
        'child = subprocess.Popen(["sleep", "60"])',
        'print("ready", flush=True)',
        'time.sleep(60)',
      ].join('\n'),
    );
    const u = treeUsage(pid);
    expect(u).not.toBeNull();
    expect(u!.cpuSeconds).toBeGreaterThanOrEqual(0.3);
    expect(u!.rssBytes).toBeGreaterThan(32 * 2 ** 20);
    expect(u!.processes).toBe(2); // python and its sleep
    process.kill(-pid, 'SIGKILL');
    for (let i = 0; i < 100 && treeUsage(pid) !== null; i++) await new Promise((r) => setTimeout(r, 20));
    expect(treeUsage(pid)).toBeNull();
  });

  it('reads at most its budget of files, however many threads the tree has', async (ctx) => {
    requires(ctx, 'proc-children');
    const pid = await python(
      [
        'import subprocess, threading, time',
        'child = subprocess.Popen(["sleep", "60"])',
        'for _ in range(300): threading.Thread(target=time.sleep, args=(60,), daemon=True).start()',
        'print("ready", flush=True)',
        'time.sleep(60)',
      ].join('\n'),
    );
    // Its 301 threads' children files use up a budget of 50 before the child is visited.
    expect(treeUsage(pid, 50)?.processes).toBe(1);
    expect(treeUsage(pid)?.processes).toBe(2);
  });
});
