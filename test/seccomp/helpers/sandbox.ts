/**
 * Runs a command in a real bubblewrap sandbox, as an unprivileged uid, with a seccomp program given
 * to `bwrap --seccomp` on fd 3. bwrap installs it just before exec, so the command and everything it
 * starts run under it, exactly as under carapace-init.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { MERGED_USR_ROOT } from '../../../src/sandbox/launch/bwrap-minimal.js';

export interface SandboxResult {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** The unprivileged identity the tests run sandboxes as when the runner is root. */
const NOBODY = 65534;

const BWRAP_ARGS = [
  '--unshare-all',
  '--unshare-user',
  '--disable-userns',
  '--die-with-parent',
  '--new-session',
  ...MERGED_USR_ROOT,
  '--proc',
  '/proc',
  '--dev',
  '/dev',
  '--tmpfs',
  '/tmp',
  '--cap-drop',
  'ALL',
];

/** `program` null: no seccomp at all (the baseline a filtered run is compared with). */
export function runInSandbox(
  program: Buffer | null,
  argv: readonly string[],
  timeoutMs = 30_000,
): Promise<SandboxResult> {
  const seccomp = program ? ['--seccomp', '3'] : [];
  const asRoot = process.getuid?.() === 0;
  const child = spawn('bwrap', [...BWRAP_ARGS, ...seccomp, '--', ...argv], {
    cwd: '/',
    env: { PATH: '/usr/bin:/bin', LANG: 'C.UTF-8', HOME: '/tmp' },
    stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
    timeout: timeoutMs,
    ...(asRoot ? { uid: NOBODY, gid: NOBODY } : {}),
  });
  const fd3 = child.stdio[3];
  if (program && fd3 && 'end' in fd3) fd3.end(program);
  else fd3?.destroy();
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (status, signal) => resolve({ status, signal, stdout, stderr }));
  });
}

/** One syscall to try: a number and arguments (integers, or values the probe builds in memory). */
export interface Probe {
  name: string;
  nr: number;
  args: readonly ProbeArg[];
  /** `fork`: the call may create a process (clone); the new one exits at once and is reaped. */
  kind?: 'fork';
}

export type ProbeArg =
  number | bigint | { str: string } | { buf: number } | { fd: string } | { argv: readonly string[] };

export interface ProbeResult {
  name: string;
  /** The call's return value; 'exec' when it replaced the process with /usr/bin/true. */
  ret: number | 'exec' | null;
  errno: number;
  /** Set when the probe process was killed (31 = SIGSYS, what SECCOMP_RET_KILL_PROCESS sends). */
  signal: number | null;
}

const PROBE_SCRIPT = readFileSync(join(import.meta.dirname, 'probe.py'), 'utf8');

/** Runs each probe in its own forked process inside one sandbox. */
export async function runProbes(program: Buffer | null, probes: readonly Probe[]): Promise<ProbeResult[]> {
  const spec = JSON.stringify(probes, (_k, v: unknown) =>
    typeof v === 'bigint' ? { u64: v.toString() } : v,
  );
  const r = await runInSandbox(program, ['/usr/bin/python3', '-c', PROBE_SCRIPT, spec]);
  if (r.status !== 0) {
    throw new Error(`probe run failed (status ${r.status}, signal ${r.signal}): ${r.stderr}`);
  }
  return JSON.parse(r.stdout) as ProbeResult[];
}
