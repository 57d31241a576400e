/**
 * Runs the built `carapace` CLI as a real process, as a user would: the bundle the launcher on PATH
 * starts (dist/cli/carapace.js), on this process's Node, which `npm test` makes Carapace's own.
 */
import { spawn, spawnSync, type ChildProcess, type SpawnSyncOptions } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { readRunRecord } from '../../src/sandbox/sandbox-lock.js';
import { processStart } from '../../src/sandbox/processes.js';
import { stateDirs } from '../../src/sandbox/state-dirs.js';

export const REPO = resolve(import.meta.dirname, '..', '..');
export const CLI = join(REPO, 'dist', 'cli', 'carapace.js');

export interface CliResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Homes this test file made: test/setup/clean-homes.ts removes them once its tests are done. */
const homes = new Set<string>();

export function freshHome(): string {
  return removedAfterFile(mkdtempSync(join(tmpdir(), 'carapace-test-')));
}

/** A temporary directory removed with the homes once the test file is done. */
export function removedAfterFile(dir: string): string {
  homes.add(dir);
  return dir;
}

/**
 * Removes the homes made so far, sandboxes' workspaces and all (17,000 of them, 14 GiB, piled up
 * in a developer's /tmp before this, and the host-wide uid registry kept a record for each
 * workspace left behind). Best effort: what cannot be removed is left.
 */
export function removeFreshHomes(): void {
  for (const home of homes) {
    endSandboxesOf(home);
    try {
      rmSync(home, { recursive: true, force: true, maxRetries: 2 });
    } catch {
      // A mount still in use, a file made immutable by a test: left for the machine's own cleaning.
    }
    homes.delete(home);
  }
}

/**
 * Ends the sandboxes still running from `home`: a gateway's sandboxes outlive it by design
 * (docs/gateway.md), so a test file whose gateway stopped leaves its agents running, polling their
 * workspaces, for as long as the host is up (120 of them were found eating the CPU of later runs).
 * Each is found by its run record, whose owner is the sandbox's init (pid and start time): killing
 * PID 1 of the sandbox's pid namespace ends everything in it.
 */
function endSandboxesOf(home: string): void {
  const dir = join(stateDirs({ CARAPACE_HOME: home }).run, 'sandboxes');
  let locks: string[];
  try {
    locks = readdirSync(dir).filter((f) => f.endsWith('.lock'));
  } catch {
    return; // no sandbox ever ran here
  }
  for (const lock of locks) {
    const r = readRunRecord(join(dir, lock));
    // Only a record whose owner is still that very process (a pid may have been reused), and
    // never this test process itself (a sandbox run in-process is its own to end).
    if (!r || r.pid === process.pid || r.start === 0 || processStart(r.pid) !== r.start) continue;
    try {
      process.kill(r.pid, 'SIGKILL');
    } catch {
      // gone meanwhile
    }
  }
}

export function carapace(args: string[], opts: SpawnSyncOptions & { home?: string } = {}): CliResult {
  const home = opts.home ?? freshHome();
  const r = spawnSync(process.execPath, [CLI, ...args], {
    encoding: 'utf8',
    timeout: 120_000,
    ...opts,
    env: { ...process.env, CARAPACE_HOME: home, ...opts.env },
  });
  return { status: r.status, stdout: String(r.stdout), stderr: String(r.stderr) };
}

/** A CLI process that runs while the test goes on (its event loop stays free for host servers). */
export interface RunningCli {
  child: ChildProcess;
  result: Promise<CliResult>;
  /** Resolves once stdout so far contains `text` (rejects if the process ends first). */
  waitForStdout(text: string): Promise<void>;
}

export function carapaceAsync(
  args: string[],
  opts: { home?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): RunningCli {
  const home = opts.home ?? freshHome();
  const child = spawn(process.execPath, [CLI, ...args], {
    env: { ...process.env, CARAPACE_HOME: home, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
    timeout: opts.timeoutMs ?? 120_000,
  });
  let stdout = '';
  let stderr = '';
  const waiters: { text: string; resolve: () => void; reject: (e: Error) => void }[] = [];
  child.stdout?.on('data', (d: Buffer) => {
    stdout += d.toString();
    for (const w of waiters.filter((w) => stdout.includes(w.text))) {
      waiters.splice(waiters.indexOf(w), 1);
      w.resolve();
    }
  });
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const result = new Promise<CliResult>((resolveResult, reject) => {
    child.on('error', reject);
    child.on('close', (status) => {
      for (const w of waiters.splice(0))
        w.reject(new Error(`carapace exited (${status}) before printing "${w.text}": ${stderr}`));
      resolveResult({ status, stdout, stderr });
    });
  });
  const waitForStdout = (text: string): Promise<void> =>
    stdout.includes(text)
      ? Promise.resolve()
      : new Promise((resolveWait, reject) => waiters.push({ text, resolve: resolveWait, reject }));
  return { child, result, waitForStdout };
}
