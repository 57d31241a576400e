/** Runs commands in real sandboxes through the built CLI, and the same commands outside for baselines. */
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { hostIdentities, type IdentityRecord } from '../../src/sandbox/identity/identity.js';
import {
  carapace,
  carapaceAsync,
  freshHome,
  removedAfterFile,
  type CliResult,
  type RunningCli,
} from './cli.js';

/**
 * A temporary directory the sandbox uids may traverse (mkdtemp makes 0700 dirs; bwrap runs as the
 * sandbox's uid and must pass through the parents of what it binds).
 */
export function sharedTempDir(prefix = 'carapace-test-'): string {
  const dir = removedAfterFile(mkdtempSync(join(tmpdir(), prefix)));
  chmodSync(dir, 0o711);
  return dir;
}

export function runInSandbox(command: string[], options: string[] = [], home = freshHome()): CliResult {
  return carapace(['run', ...options, '--', ...command], { home });
}

/** `carapace run` in the background: for attacks that need the host to act while the sandbox runs. */
export function startInSandbox(
  command: string[],
  options: string[] = [],
  home = freshHome(),
  env: NodeJS.ProcessEnv = {},
): RunningCli {
  return carapaceAsync(['run', ...options, '--', ...command], { home, env });
}

/** The unprivileged host uid a baseline runs as (outside any sandbox) when the tests run as root. */
export const HOST_NOBODY = 65534;

/**
 * Runs `command` on the host, outside any sandbox, as `uid` (default: nobody when we are root): the
 * baseline that shows an attack works where Carapace is not in the way.
 */
export function runOnHost(command: string[], uid = HOST_NOBODY, cwd = sharedTempDir()): CliResult {
  const asRoot = process.getuid?.() === 0;
  const r = spawnSync(command[0]!, command.slice(1), {
    encoding: 'utf8',
    timeout: 60_000,
    cwd,
    env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C.UTF-8', HOME: cwd },
    ...(asRoot && uid !== 0 ? { uid, gid: uid } : {}),
  });
  return { status: r.status, stdout: String(r.stdout), stderr: String(r.stderr) };
}

/** The host uid registry's records of one state directory (none when rootless). */
export function hostUidRecords(stateDir: string): IdentityRecord[] {
  const registry = hostIdentities();
  return registry ? registry.records().filter((r) => r.state === stateDir) : [];
}

/** A policy file (readable by every sandbox uid) with this YAML. */
export function policyFile(yaml: string): string {
  const path = join(sharedTempDir(), 'policy.yaml');
  writeFileSync(path, yaml, { mode: 0o644 });
  return path;
}

/** One OCSF event of an --audit file. */
export interface AuditEvent {
  class_uid: number;
  activity_id: number;
  message: string;
  unmapped: Record<string, unknown>;
  [field: string]: unknown;
}

export function readAudit(file: string): AuditEvent[] {
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as AuditEvent);
}

/**
 * A Python program for inside the sandbox that prints `ok` or the errno's name for each attempt,
 * so a test asserts exactly what the kernel answered. `report(r)` judges a raw libc return value,
 * `attempt(f)` a Python call that raises OSError.
 */
export function pySyscall(body: string): string[] {
  return [
    'python3',
    '-c',
    [
      'import ctypes, errno, os, socket, sys',
      'libc = ctypes.CDLL(None, use_errno=True)',
      'def report(r):',
      '    e = ctypes.get_errno()',
      '    print("ok" if r >= 0 else errno.errorcode.get(e, str(e)), flush=True)',
      'def attempt(f):',
      '    try:',
      '        f(); print("ok", flush=True)',
      '    except OSError as e:',
      '        print(errno.errorcode.get(e.errno, str(e.errno)), flush=True)',
      body,
    ].join('\n'),
  ];
}
