/**
 * What the sandbox benches share: a scratch CARAPACE_HOME, sandboxes started through the library
 * (src/sandbox/sandbox.ts, as the gateway does, so Node's own start-up is not counted), a bare
 * bwrap to compare with, and process memory from /proc.
 */
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defaultPolicyPath } from '../src/runtime/one-off-run.js';
import { loadSandboxSettings } from '../src/runtime/policy-settings.js';
import { specFromSettings, type SandboxSettings } from '../src/runtime/sandbox-spec-from-policy.js';
import { MERGED_USR_ROOT } from '../src/sandbox/launch/bwrap-minimal.js';
import { agentStarted } from '../src/sandbox/launch/running-sandbox.js';
import {
  newSandboxName,
  sandboxPaths,
  startSandbox,
  type StartedSandbox,
  type StartOptions,
} from '../src/sandbox/sandbox.js';
import { stateDirs, type StateDirs } from '../src/sandbox/state-dirs.js';
import { hostIdentities } from '../src/sandbox/identity/identity.js';

/** The unprivileged uid bare bwrap runs as when the bench runs as root (sandboxes get their own). */
export const BARE_UID = 65534;

export interface BenchHome {
  dir: string;
  dirs: StateDirs;
  /** The default policy's settings, and a policy with the same paths and no limits (no cgroup). */
  defaultPolicy: SandboxSettings;
  noLimits: SandboxSettings;
  remove(): void;
}

/**
 * A scratch home. With `runOnTmpfs` (as root, where /run is a tmpfs), the run directory is made
 * under /run as an installed Carapace's is (/run/carapace): its files (run records, generated
 * /etc files) are replaced through renames, which cost ~0.2 ms each on this machine's ext4 /tmp
 * and nothing much on a tmpfs.
 */
export async function benchHome(opts: { runOnTmpfs?: boolean } = {}): Promise<BenchHome> {
  const dir = mkdtempSync(join(tmpdir(), 'carapace-bench-'));
  chmodSync(dir, 0o711); // sandbox uids pass through it to their runtime files
  const runDir = opts.runOnTmpfs && runIsTmpfs() ? mkdtempSync('/run/carapace-bench-') : null;
  if (runDir !== null) chmodSync(runDir, 0o711);
  const dirs: StateDirs =
    runDir !== null ? { state: join(dir, 'state'), run: runDir } : stateDirs({ CARAPACE_HOME: dir });
  const noLimitsFile = join(dir, 'no-limits.yaml');
  writeFileSync(
    noLimitsFile,
    'version: 1\nfilesystem_policy:\n  read_only: [/usr, /lib, /lib64, /bin, /sbin, /etc]\n  read_write: [/sandbox, /tmp]\n',
  );
  return {
    dir,
    dirs,
    defaultPolicy: await loadSandboxSettings(defaultPolicyPath(), dirs.state),
    noLimits: await loadSandboxSettings(noLimitsFile, dirs.state),
    remove: () => {
      rmSync(dir, { recursive: true, force: true });
      if (runDir !== null) rmSync(runDir, { recursive: true, force: true });
    },
  };
}

function runIsTmpfs(): boolean {
  if (process.getuid?.() !== 0) return false;
  const mounts = readFileSync('/proc/self/mounts', 'utf8').split('\n');
  return mounts.some((line) => {
    const [, target, type] = line.split(' ');
    return target === '/run' && type === 'tmpfs';
  });
}

export async function startIn(
  home: BenchHome,
  settings: SandboxSettings,
  command: string[],
  opts: Partial<StartOptions> = {},
): Promise<StartedSandbox> {
  const name = newSandboxName();
  const spec = specFromSettings(settings, {
    name,
    workspace: sandboxPaths(home.dirs, name).defaultWorkspace,
    env: {},
    mounts: [],
    command,
  });
  const started = await startSandbox(spec, {
    dirs: home.dirs,
    identities: hostIdentities(),
    ephemeral: true,
    removeWorkspace: true,
    bestEffortLimits: false,
    stdio: 'pipe',
    ...opts,
  });
  started.process.stdin?.end();
  return started;
}

/** Milliseconds from startSandbox() to the agent's execve (its status fd closes then). */
export async function timeStart(home: BenchHome, settings: SandboxSettings): Promise<number> {
  const t0 = process.hrtime.bigint();
  // stdio as carapace run has it (inherited): only the sandbox's own pipes are made.
  const started = await startIn(home, settings, ['/bin/true'], { stdio: 'inherit' });
  const ok = await agentStarted(started.process);
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  await started.process.exited;
  await started.cleanup(); // as `carapace run` does before it exits
  if (!ok) throw new Error(`the sandbox did not start: ${JSON.stringify(started.process.events)}`);
  return ms;
}

/** The same namespaces, flags and a minimal root as a Carapace sandbox, running /bin/true. */
export const BARE_BWRAP = [
  '--unshare-all',
  '--unshare-user',
  '--disable-userns',
  '--die-with-parent',
  '--new-session',
  '--cap-drop',
  'ALL',
  ...MERGED_USR_ROOT,
  '--proc',
  '/proc',
  '--dev',
  '/dev',
  '--',
  '/bin/true',
];

/** Milliseconds from spawn to exit of a process (as `uid` when we are root). */
export async function timeSpawn(
  file: string,
  args: string[],
  uid?: number,
  env?: NodeJS.ProcessEnv,
): Promise<number> {
  const asRoot = process.getuid?.() === 0;
  const t0 = process.hrtime.bigint();
  const child = spawn(file, args, {
    stdio: 'ignore',
    ...(env ? { env } : {}),
    ...(asRoot && uid !== undefined ? { uid, gid: uid } : {}),
  });
  const [code] = (await once(child, 'exit')) as [number | null];
  if (code !== 0) throw new Error(`${file} ${args.join(' ')} exited ${code}`);
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? NaN;
}

/** A field of /proc/<pid>/status in KiB (VmRSS, RssAnon, …). */
export function statusKiB(pid: number, field: string): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}

/** The first child of `pid` (the agent, for a sandbox's init). */
export function firstChild(pid: number): number {
  const children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/);
  return Number(children[0]);
}

/** Whether bwrap is here at all: the sandbox benches need it. */
export function haveBwrap(): boolean {
  return spawnSync('bwrap', ['--version']).status === 0;
}
