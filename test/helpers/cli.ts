/** Runs the built `carapace` CLI (dist/) as a real process, as a user would. */
import { spawn, spawnSync, type SpawnSyncOptions } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

export const REPO = resolve(import.meta.dirname, '..', '..');
export const CLI = join(REPO, 'dist', 'src', 'cli', 'main.js');

export interface CliResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

export function freshHome(): string {
  return mkdtempSync(join(tmpdir(), 'carapace-test-'));
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

/**
 * Runs the CLI without blocking this process's event loop: needed whenever the test itself serves
 * something the sandbox talks to (an upstream behind the proxy).
 */
export function carapaceAsync(
  args: string[],
  opts: { home?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<CliResult> {
  const home = opts.home ?? freshHome();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      env: { ...process.env, CARAPACE_HOME: home, ...opts.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}
