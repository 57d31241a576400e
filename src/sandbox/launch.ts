/**
 * Starts one sandbox: bwrap → carapace-init (PID 1) → the agent.
 *
 * Order of events, and why:
 * 1. bwrap creates every namespace, mounts the plan and runs the init, which blocks on
 *    --block-fd before it does anything else (bwrap reads that fd before exec'ing it).
 * 2. bwrap reports the init's host pid on --info-fd; we move that pid into the sandbox's cgroups,
 *    so that every process the sandbox will ever have is born inside them.
 * 3. We release --block-fd; the init starts the relay, forks the agent, and in the agent's process
 *    applies rlimits, Landlock, no_new_privs and the seccomp program (read from its own fd), then
 *    reports each step on the status fd and exec's the command.
 * When Carapace runs as root, bwrap itself runs as the sandbox's unprivileged host uid, so nothing
 * in the sandbox is ever host root, even before the init has dropped anything. What it binds from
 * trees a sandbox can write comes as fds (--bind-fd), or, where that uid cannot reach the path,
 * through carapace-launch's aliases (bind-sources.ts).
 *
 * bwrap's own stderr is a pipe we read: when the start fails before the agent runs, its message is
 * the reason we report, as one line. The stderr the agent is meant to have reaches the init as
 * --stderr-fd, which makes it fd 2 before anything else.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import type { Readable, Writable } from 'node:stream';
import type { SandboxCgroup } from './cgroup.js';
import type { SandboxIdentity } from './identity.js';
import { SANDBOX_UID_INSIDE } from './identity.js';
import { mountArgs, type MountOp, type MountPlan } from './mount-plan.js';
import { nativeLauncher } from './native-paths.js';
import { INIT_PATH, WORKSPACE_PATH } from './spec.js';

export class SandboxStartError extends Error {
  override name = 'SandboxStartError';
  constructor(
    message: string,
    readonly exitCode = 125,
  ) {
    super(message);
  }
}

/** One JSON object the init wrote on its status fd. */
export interface InitEvent {
  event: string;
  [key: string]: unknown;
}

export interface LaunchRequest {
  name: string;
  identity: SandboxIdentity;
  plan: MountPlan;
  /** Host path of carapace-init, reachable by the sandbox's uid. */
  initBinary: string;
  env: Record<string, string>;
  command: string[];
  landlock: 'best_effort' | 'hard_requirement';
  landlockAbiMax?: number | undefined;
  listenPorts: number[];
  openFiles?: number | undefined;
  nproc?: number | undefined;
  seccomp: Buffer;
  /** Host directory holding the sandbox's proxy socket; enables the relay. */
  relay?: { dir: number; socketName: string } | undefined;
  cgroup: SandboxCgroup | null;
  stdio: 'inherit' | 'pipe';
  /** fd-binds the sandbox's uid cannot reach by path: fd → alias (bound by carapace-launch). */
  aliases?: Map<number, string> | undefined;
}

export interface SandboxExit {
  /** The agent's exit code, 128+signal when it was killed, 125-127 when the start failed. */
  code: number;
}

export class RunningSandbox {
  readonly events: InitEvent[] = [];
  readonly exited: Promise<SandboxExit>;

  constructor(
    readonly child: ChildProcess,
    readonly initPid: number,
    exited: Promise<SandboxExit>,
    private readonly bwrapLog: StartLog,
  ) {
    this.exited = exited;
  }

  get stdout(): Readable | null {
    return this.child.stdout;
  }
  /** The agent's stderr (with stdio 'pipe'). */
  get stderr(): Readable | null {
    return ((this.child.stdio as unknown as (Readable | null)[])[FD_AGENT_STDERR] ?? null) as Readable | null;
  }
  /** What bwrap (or, before --stderr-fd took effect, the init) wrote on its own stderr. */
  get bwrapMessages(): string {
    return this.bwrapLog.text;
  }
  /** The first line bwrap wrote, or what its exit status says. */
  startReason(status: number): string {
    return this.bwrapLog.reason(status);
  }
  get stdin(): Writable | null {
    return this.child.stdin;
  }

  /** Sends a signal to the init (PID 1 inside), which forwards SIGTERM/SIGINT/SIGHUP to the agent. */
  signal(sig: NodeJS.Signals): void {
    try {
      process.kill(this.initPid, sig);
    } catch {
      // already gone
    }
  }
}

const FD_INFO = 3;
const FD_BLOCK = 4;
const FD_STATUS = 5;
const FD_SECCOMP = 6;
const FD_RELAY = 7;
/** The agent's stderr; bwrap's own fd 2 is the start-log pipe. */
const FD_AGENT_STDERR = 8;
/** The first of the fds bwrap binds (--bind-fd), one per fd-bind, in plan order. */
const FD_FIRST_BIND = 9;

type FdBind = Extract<MountOp, { kind: 'fd-bind' }>;

/** The fd each fd-bind has in bwrap (or in carapace-launch, for the aliased ones). */
function bindFds(plan: MountPlan): Map<number, number> {
  const fds = new Map<number, number>();
  for (const op of plan.ops) if (op.kind === 'fd-bind') fds.set(op.fd, FD_FIRST_BIND + fds.size);
  return fds;
}

function fdBindArgs(req: LaunchRequest, fds: Map<number, number>): (op: FdBind) => string[] {
  return (op) => {
    const alias = req.aliases?.get(op.fd);
    if (alias !== undefined) return [op.readOnly ? '--ro-bind' : '--bind', alias, op.path];
    return [op.readOnly ? '--ro-bind-fd' : '--bind-fd', String(fds.get(op.fd)), op.path];
  };
}

export function bwrapArgs(req: LaunchRequest): string[] {
  const args = [
    '--unshare-all',
    '--unshare-user',
    '--disable-userns',
    '--uid',
    String(SANDBOX_UID_INSIDE),
    '--gid',
    String(SANDBOX_UID_INSIDE),
    '--hostname',
    req.name,
    '--cap-drop',
    'ALL',
    '--die-with-parent',
    '--new-session',
    '--as-pid-1',
    '--info-fd',
    String(FD_INFO),
    '--block-fd',
    String(FD_BLOCK),
    ...mountArgs(req.plan, fdBindArgs(req, bindFds(req.plan))),
    '--ro-bind',
    req.initBinary,
    INIT_PATH,
    // Last: bwrap's root tmpfs (where the mount points live) becomes read-only and unfillable.
    '--remount-ro',
    '/',
    '--chdir',
    WORKSPACE_PATH,
    '--',
    INIT_PATH,
    ...initArgs(req),
    '--',
    ...req.command,
  ];
  return args;
}

export function initArgs(req: LaunchRequest): string[] {
  const args = [
    '--status-fd',
    String(FD_STATUS),
    '--seccomp-fd',
    String(FD_SECCOMP),
    '--stderr-fd',
    String(FD_AGENT_STDERR),
    '--landlock',
    req.landlock,
  ];
  if (req.landlockAbiMax !== undefined) args.push('--landlock-abi-max', String(req.landlockAbiMax));
  for (const p of req.plan.landlockReadOnly) args.push('--ro', p);
  for (const p of req.plan.landlockReadWrite) args.push('--rw', p);
  for (const p of req.plan.landlockListDirs) args.push('--list', p);
  for (const p of req.listenPorts) args.push('--bind-port', String(p));
  if (req.openFiles !== undefined) args.push('--nofile', String(req.openFiles));
  if (req.nproc !== undefined) args.push('--nproc', String(req.nproc));
  if (req.relay) args.push('--relay-dir-fd', String(FD_RELAY), '--relay-socket', req.relay.socketName);
  return args;
}

export async function launchSandbox(req: LaunchRequest): Promise<RunningSandbox> {
  const io = req.stdio === 'inherit' ? 'inherit' : 'pipe';
  // fd 2 is bwrap's own (the start log); the agent's stderr is FD_AGENT_STDERR, for the init to
  // make its fd 2. 'inherit' there would mean our fd 8: it is our fd 2 that is meant.
  const stdio: (string | number)[] = [io, io, 'pipe', 'pipe', 'pipe', 'pipe', 'pipe'];
  stdio.push(req.relay ? req.relay.dir : 'ignore', io === 'inherit' ? 2 : 'pipe');
  const fds = bindFds(req.plan);
  for (const fd of fds.keys()) stdio.push(fd);
  const args = bwrapArgs(req);
  const aliases = [...(req.aliases ?? [])];
  if (aliases.length > 0 && !req.identity.rootless && !existsSync(nativeLauncher())) {
    throw new SandboxStartError(`${nativeLauncher()} is missing: run ./install.sh (or npm run build)`);
  }
  const asSandbox = req.identity.rootless ? {} : { uid: req.identity.uid, gid: req.identity.gid };
  // With aliases, carapace-launch (root) binds them in its own mount namespace, becomes the
  // sandbox's uid and execs bwrap: the same process, so everything below holds either way.
  const child =
    aliases.length > 0 && !req.identity.rootless
      ? spawn(
          nativeLauncher(),
          [
            '--uid',
            String(req.identity.uid),
            '--gid',
            String(req.identity.gid),
            ...aliases.flatMap(([fd, alias]) => ['--alias', String(fds.get(fd)), alias]),
            '--',
            'bwrap',
            ...args,
          ],
          { stdio: stdio as ('pipe' | 'inherit' | 'ignore' | number)[], env: req.env },
        )
      : spawn('bwrap', args, {
          stdio: stdio as ('pipe' | 'inherit' | 'ignore' | number)[],
          env: req.env,
          ...asSandbox,
        });
  const exitedRaw = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  const spawnError = new Promise<never>((_, reject) =>
    child.once('error', (err) =>
      reject(new SandboxStartError(`cannot run bwrap: ${err.message} (run carapace doctor)`)),
    ),
  );
  const pipes = child.stdio as unknown as (Readable & Writable)[];
  const log = new StartLog(pipes[2] as Readable);
  const seccompPipe = pipes[FD_SECCOMP] as Writable;
  seccompPipe.on('error', () => {});
  seccompPipe.end(req.seccomp);

  const info = await Promise.race([
    readInfo(pipes[FD_INFO] as Readable),
    spawnError,
    exitedRaw.then(() => null),
  ]);
  if (info === null) {
    const r = await exitedRaw;
    await log.ended;
    throw new SandboxStartError(`the sandbox did not start: ${log.reason(r.code ?? r.signal)}`);
  }
  const initPid = info['child-pid'];
  if (typeof initPid !== 'number') throw new SandboxStartError('bwrap did not report the sandbox pid');
  try {
    req.cgroup?.enter(initPid);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') {
      // Gone already: bwrap failed setting the sandbox up (after reporting its pid); say why.
      const r = await exitedRaw;
      await log.ended;
      throw new SandboxStartError(`the sandbox did not start: ${log.reason(r.code ?? r.signal)}`);
    }
    child.kill('SIGKILL');
    throw new SandboxStartError(`cannot move the sandbox into its cgroup: ${(err as Error).message}`);
  }
  const block = pipes[FD_BLOCK] as Writable;
  block.on('error', () => {});
  block.end('1');

  const exited = exitedRaw.then(({ code, signal }) => ({
    code: code ?? 128 + (signal ? signalNumber(signal) : 0),
  }));
  const sandbox = new RunningSandbox(child, initPid, exited, log);
  collectStatus(pipes[FD_STATUS] as Readable, sandbox.events);
  // Once the agent runs, anything bwrap still says is not a start failure: pass it on.
  if (io === 'inherit') {
    void agentStarted(sandbox).then((ok) => {
      if (ok) log.forwardTo(process.stderr);
    });
  }
  return sandbox;
}

/**
 * bwrap's stderr: kept (bounded) until the agent runs, for the reason of a failed start. Nothing
 * of the agent's ever arrives here: the init moves the agent's stderr to fd 2 first thing.
 */
class StartLog {
  text = '';
  readonly ended: Promise<void>;
  private sink: Writable | null = null;
  private static readonly LIMIT = 16 * 1024;

  constructor(stream: Readable) {
    stream.setEncoding('utf8');
    stream.on('data', (chunk: string) => {
      if (this.sink) this.sink.write(chunk);
      else if (this.text.length < StartLog.LIMIT)
        this.text += chunk.slice(0, StartLog.LIMIT - this.text.length);
    });
    stream.on('error', () => {});
    this.ended = once(stream, 'close').then(
      () => undefined,
      () => undefined,
    );
  }

  forwardTo(sink: Writable): void {
    if (this.text) sink.write(this.text);
    this.sink = sink;
  }

  /** The one line that says why the start failed: bwrap's (or the launcher's) own. */
  reason(status: number | string | null): string {
    const line = this.text
      .split('\n')
      .map((l) => l.trim())
      .find((l) => l !== '');
    return line ?? `bwrap exited with status ${status} before the sandbox's init ran`;
  }
}

/**
 * Why a sandbox whose agent never started did not, as one line: what bwrap said (its stderr is
 * ours until the init runs), or null when the init itself failed and has already said why on the
 * agent's stderr (its status line is on record too).
 */
export function startFailure(sandbox: RunningSandbox, status: number): string | null {
  const initSaidWhy = sandbox.events.some((e) => e.event === 'error');
  if (initSaidWhy && sandbox.bwrapMessages.trim() === '') return null;
  return sandbox.startReason(status);
}

/** Resolves when the init has exec'd the agent (true) or failed before it could (false). */
export async function agentStarted(sandbox: RunningSandbox): Promise<boolean> {
  const status = (sandbox.child.stdio as unknown as Readable[])[FD_STATUS] as Readable;
  if (!status.readableEnded) await once(status, 'close').catch(() => {});
  return sandbox.events.some((e) => e.event === 'exec');
}

async function readInfo(stream: Readable): Promise<Record<string, unknown> | null> {
  let text = '';
  for await (const chunk of stream) {
    text += String(chunk);
    // bwrap writes one JSON object, then keeps the fd open until the sandbox ends.
    try {
      return JSON.parse(text) as Record<string, unknown>;
    } catch {
      // incomplete: wait for more
    }
  }
  return text ? (JSON.parse(text) as Record<string, unknown>) : null;
}

function collectStatus(stream: Readable, into: InitEvent[]): void {
  let buffered = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    buffered += chunk;
    let nl: number;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, nl).trim();
      buffered = buffered.slice(nl + 1);
      if (!line) continue;
      try {
        into.push(JSON.parse(line) as InitEvent);
      } catch {
        into.push({ event: 'unparsed', line });
      }
    }
  });
  stream.on('error', () => {});
}

function signalNumber(sig: NodeJS.Signals): number {
  return osConstants.signals[sig] ?? 0;
}
