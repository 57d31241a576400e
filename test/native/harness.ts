/**
 * Runs carapace-init as PID 1 of a real bubblewrap sandbox, the way the sandbox layer will.
 *
 * The tests run as root, so bwrap is started as an unprivileged host uid (SANDBOX_UID): the
 * sandbox is never host root, and its user namespace maps uid 1000 inside to that uid outside.
 * Init is copied to a directory that uid can read. File descriptors: 0-2 stdio, 3 the status fd,
 * 4 bwrap's --info-fd (init's host pid), 5 and up whatever the test passes (`fds`).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MERGED_USR_ROOT } from '../../src/sandbox/launch/bwrap-minimal.js';
import { nativeProgram } from './native-build.js';

export const SANDBOX_UID = 200_000;
export const STATUS_FD = 3;
export const FIRST_EXTRA_FD = 5;

let initCopy: string | undefined;

const temporary: string[] = [];
process.on('exit', () => {
  for (const dir of temporary) rmSync(dir, { recursive: true, force: true });
});

function temporaryDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  temporary.push(dir);
  return dir;
}

/** The init under test (native-build.ts), copied where SANDBOX_UID can execute it. */
export function initBinary(): string {
  if (initCopy) return initCopy;
  const dir = temporaryDir('carapace-init-');
  chmodSync(dir, 0o755);
  initCopy = join(dir, 'carapace-init');
  copyFileSync(nativeProgram('carapace-init'), initCopy);
  chmodSync(initCopy, 0o755);
  return initCopy;
}

/** A host directory of files the sandbox sees read-only at /w (bind it with `workDir`). */
export function workDir(files: Record<string, string>): string {
  const dir = temporaryDir('carapace-work-');
  chmodSync(dir, 0o755);
  for (const [name, text] of Object.entries(files)) {
    writeFileSync(join(dir, name), text, { mode: 0o644 });
  }
  return dir;
}

/** A host directory only SANDBOX_UID can enter: where a test's host proxy socket lives. */
export function sandboxOwnedDir(): string {
  const dir = temporaryDir('carapace-relay-');
  chownSync(dir, SANDBOX_UID, SANDBOX_UID);
  chmodSync(dir, 0o700);
  return dir;
}

/** Landlock paths that let ordinary programs run: system read-only, /tmp and /dev writable. */
export const USUAL_PATHS = ['--ro', '/usr', '--ro', '/etc', '--ro', '/proc', '--rw', '/tmp', '--rw', '/dev'];

export interface StatusEvent {
  event: string;
  [key: string]: unknown;
}

export interface SandboxResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** Every line written to the status fd, parsed (a line that is not JSON fails the run). */
  status: StatusEvent[];
  /** Every line written to the event fd (with `events: true`), parsed. */
  eventLines: StatusEvent[];
}

export interface SandboxOptions {
  /** carapace-init's options (before `--`). --status-fd 3 is always added. */
  init?: string[];
  command: string[];
  /** Host directory to bind read-only at /w. */
  work?: string;
  /**
   * `system` (default): the host's /usr (and its root symlinks) and /etc, read-only. `init-only`:
   * nothing of the host but the init itself, as under a policy that lists no system directory.
   */
  root?: 'system' | 'init-only';
  /** Another build of the init to run (e.g. from buildVariant), instead of the one under test. */
  initBinary?: string;
  /** More bwrap arguments, before `--`. */
  bwrap?: string[];
  /** Host fds handed to the sandbox as fd 5, 6, ... */
  fds?: number[];
  /** Start bwrap (and so init) with this hard and soft RLIMIT_NOFILE. */
  nofileLimit?: number;
  /** What the agent reads on stdin (then end of file); null leaves stdin open for the test. */
  stdin?: string | null;
  /** Give the init an event fd (--event-fd, after the `fds`), whose lines the result collects. */
  events?: boolean;
}

export interface Sandbox {
  child: ChildProcess;
  /** Init's pid on the host (bwrap's --info-fd). */
  initPid: Promise<number>;
  /** Status events as they arrive; resolves on the first `exec` or `error` event. */
  started: Promise<StatusEvent[]>;
  result: Promise<SandboxResult>;
  /** Resolves once the agent's stdout so far contains `text`. */
  waitForStdout(text: string): Promise<void>;
}

export function bwrapArguments(opts: SandboxOptions): string[] {
  const args = [
    '--unshare-all',
    '--unshare-user',
    '--disable-userns',
    '--uid',
    '1000',
    '--gid',
    '1000',
    '--as-pid-1',
    '--die-with-parent',
    '--new-session',
    '--cap-drop',
    'ALL',
    ...(opts.root === 'init-only' ? [] : [...MERGED_USR_ROOT, '--ro-bind', '/etc', '/etc']),
    '--proc',
    '/proc',
    '--dev',
    '/dev',
    '--tmpfs',
    '/tmp',
    '--chdir',
    '/tmp',
    '--setenv',
    'PATH',
    '/usr/bin:/bin',
    '--info-fd',
    '4',
    '--ro-bind',
    opts.initBinary ?? initBinary(),
    '/.carapace/init',
  ];
  if (opts.work) args.push('--ro-bind', opts.work, '/w');
  args.push(...(opts.bwrap ?? []));
  args.push(
    '--',
    '/.carapace/init',
    '--status-fd',
    String(STATUS_FD),
    ...(opts.events ? ['--event-fd', String(eventFd(opts))] : []),
    ...(opts.init ?? []),
    '--',
    ...opts.command,
  );
  return args;
}

/** The fd number the event pipe gets: the first after the test's own `fds`. */
function eventFd(opts: SandboxOptions): number {
  return FIRST_EXTRA_FD + (opts.fds?.length ?? 0);
}

export function startSandbox(opts: SandboxOptions): Sandbox {
  const [program, args] = opts.nofileLimit
    ? [
        'prlimit',
        [`--nofile=${opts.nofileLimit}:${opts.nofileLimit}`, '--', 'bwrap', ...bwrapArguments(opts)],
      ]
    : ['bwrap', bwrapArguments(opts)];
  const child = spawn(program, args, {
    uid: SANDBOX_UID,
    gid: SANDBOX_UID,
    env: { PATH: '/usr/bin:/bin' },
    stdio: [
      'pipe',
      'pipe',
      'pipe',
      'pipe',
      'pipe',
      ...(opts.fds ?? []),
      ...(opts.events ? ['pipe' as const] : []),
    ],
  });
  // The init may have exited (a refused start) before its stdin is written: EPIPE is no error here.
  child.stdin?.on('error', () => {});
  if (opts.stdin !== null) child.stdin?.end(opts.stdin ?? '');

  let stdout = '';
  let stderr = '';
  let statusText = '';
  let infoText = '';
  const stdoutWaiters: { text: string; resolve: () => void }[] = [];
  child.stdout?.on('data', (d: Buffer) => {
    stdout += d.toString();
    for (const waiter of stdoutWaiters.filter((w) => stdout.includes(w.text))) {
      stdoutWaiters.splice(stdoutWaiters.indexOf(waiter), 1);
      waiter.resolve();
    }
  });
  const waitForStdout = (text: string): Promise<void> =>
    stdout.includes(text)
      ? Promise.resolve()
      : new Promise((resolve) => stdoutWaiters.push({ text, resolve }));
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const status = child.stdio[STATUS_FD] as NodeJS.ReadableStream;
  const info = child.stdio[4] as NodeJS.ReadableStream;

  const parsed: StatusEvent[] = [];
  let resolveStarted: (events: StatusEvent[]) => void = () => {};
  const started = new Promise<StatusEvent[]>((resolve) => (resolveStarted = resolve));
  status.on('data', (d: Buffer) => {
    statusText += d.toString();
    let newline;
    while ((newline = statusText.indexOf('\n')) >= 0) {
      const event = JSON.parse(statusText.slice(0, newline)) as StatusEvent;
      statusText = statusText.slice(newline + 1);
      parsed.push(event);
      if (event.event === 'exec' || event.event === 'error') resolveStarted(parsed);
    }
  });
  status.on('end', () => resolveStarted(parsed));

  const initPid = new Promise<number>((resolve, reject) => {
    info.on('data', (d: Buffer) => (infoText += d.toString()));
    info.on('end', () => {
      const pid = (JSON.parse(infoText || '{}') as { 'child-pid'?: number })['child-pid'];
      if (pid) resolve(pid);
      else reject(new Error(`no child-pid from bwrap --info-fd: ${infoText}`));
    });
  });
  initPid.catch(() => {});

  let eventText = '';
  if (opts.events)
    (child.stdio[eventFd(opts)] as NodeJS.ReadableStream).on(
      'data',
      (d: Buffer) => (eventText += d.toString()),
    );

  const result = new Promise<SandboxResult>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (statusText.trim() !== '') reject(new Error(`unterminated status line: ${statusText}`));
      if (eventText !== '' && !eventText.endsWith('\n'))
        reject(new Error(`unterminated event line: ${eventText}`));
      const eventLines = eventText
        .split('\n')
        .filter((l) => l !== '')
        .map((l) => JSON.parse(l) as StatusEvent);
      resolve({ code, signal, stdout, stderr, status: parsed, eventLines });
    });
  });
  return { child, initPid, started, result, waitForStdout };
}

/** Starts a sandbox and waits for it to end. */
export function runSandbox(opts: SandboxOptions): Promise<SandboxResult> {
  return startSandbox(opts).result;
}

/** The events of one kind in a run. */
export function events(result: SandboxResult, kind: string): StatusEvent[] {
  return result.status.filter((e) => e.event === kind);
}

/** `python3 -c` with the script's stdout as JSON. */
export function python(code: string): string[] {
  return ['/usr/bin/python3', '-c', code];
}
