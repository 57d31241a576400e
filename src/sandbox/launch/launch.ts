/**
 * Starts one sandbox: bwrap → carapace-init (PID 1) → the agent.
 *
 * Order of events, and why:
 * 1. bwrap creates every namespace, mounts the plan and runs the init, which blocks on
 *    --block-fd before it does anything else (bwrap reads that fd before exec'ing it).
 * 2. bwrap reports the init's host pid on --info-fd; we move that pid into the sandbox's cgroups,
 *    so that every process the sandbox will ever have is born inside them, and set its
 *    oom_score_adj floor (setOomScoreFloor).
 * 3. We release --block-fd; the init starts the relay, forks the agent, and in the agent's process
 *    applies rlimits, Landlock, no_new_privs and the seccomp program (read from its own fd), then
 *    reports each step on the status fd and exec's the command. While the sandbox runs, the init
 *    reports the connections the sandbox refuses on the event fd (RunningSandbox.onEvent).
 * When Carapace runs as root, bwrap itself runs as the sandbox's unprivileged host uid, so nothing
 * in the sandbox is ever host root, even before the init has dropped anything. What it binds from
 * trees a sandbox can write comes as fds (--bind-fd), or, where that uid cannot reach the path,
 * through carapace-launch's aliases (bind-sources.ts).
 *
 * bwrap's own stderr is a pipe we read: when the start fails before the agent runs, its message is
 * the reason we report, as one line. The stderr the agent is meant to have reaches the init as
 * --stderr-fd, which makes it fd 2 before anything else.
 *
 * A sandbox a gateway holds may outlive the process that started it (`detached`): no
 * --die-with-parent, bwrap in a session of its own with /dev/null for stdio, no event pipe (the
 * events go to the control socket), and once the agent runs nothing of ours keeps this process
 * alive (RunningSandbox.release). Its host has the control socket (--control-dir-fd: exec,
 * connect, events, status, signal; control.ts), the agent's output as JSON lines in a log file
 * (--log-fd), and the exit record the init leaves in the control directory.
 *
 * The agent's environment is the agent's only. bwrap runs on the host with an empty environment
 * (LD_PRELOAD, LD_LIBRARY_PATH, GLIBC_TUNABLES and the like given with --env would otherwise act
 * on bwrap itself, on the host, before any namespace exists), and so does the init it starts. The
 * environment goes to the init on a pipe (--env-fd), which hands it to the agent's execve alone;
 * never in argv, which /proc/<pid>/cmdline shows to every process of the same uid.
 */
import { spawn } from 'node:child_process';
import { closeSync, constants, existsSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import type { Readable, Writable } from 'node:stream';
import {
  bindFds,
  bwrapArgs,
  FD_BLOCK,
  FD_ENV,
  FD_EVENTS,
  FD_INFO,
  FD_SECCOMP,
  FD_STATUS,
  type LaunchRequest,
} from './launch-args.js';
import { bwrapBinary, nativeLauncher } from '../native-paths.js';
import { processStart } from '../processes.js';
import { agentStarted, RunningSandbox, StartLog, type InitEvent } from './running-sandbox.js';

export class SandboxStartError extends Error {
  override name = 'SandboxStartError';
  constructor(
    message: string,
    readonly exitCode = 125,
  ) {
    super(message);
  }
}

export async function launchSandbox(req: LaunchRequest): Promise<RunningSandbox> {
  const aliases = [...(req.aliases ?? [])];
  const viaLauncher = aliases.length > 0 && !req.identity.rootless;
  if (viaLauncher && !existsSync(nativeLauncher())) {
    throw new SandboxStartError(`${nativeLauncher()} is missing: run ./install.sh (or npm run build)`);
  }
  // Detached, nothing of the sandbox's is tied to us: /dev/null for its stdio (with a log file,
  // the agent's output goes there; the init's own warnings too).
  const io = req.detached ? 'ignore' : req.stdio === 'inherit' ? 'inherit' : 'pipe';
  const environment = environmentBytes(req.env);
  // fd 2 is bwrap's own (the start log); the agent's stderr is FD_AGENT_STDERR, for the init to
  // make its fd 2. 'inherit' there would mean our own fd 10: it is our fd 2 that is meant.
  const stdio: (string | number)[] = [io, io, 'pipe', 'pipe', 'pipe', 'pipe', 'pipe', 'pipe'];
  stdio.push(req.detached ? 'ignore' : 'pipe'); // FD_EVENTS
  // 'ignore' leaves an fd above 2 closed: the agent's stderr, detached, is an fd of /dev/null.
  const devNull = req.detached ? openSync('/dev/null', constants.O_WRONLY) : null;
  stdio.push(req.relay ? req.relay.dir : 'ignore', devNull ?? (io === 'inherit' ? 2 : io));
  stdio.push(req.controlDir ?? 'ignore', req.logFile ?? 'ignore');
  const fds = bindFds(req.plan);
  for (const fd of fds.keys()) stdio.push(fd);
  const args = bwrapArgs(req);
  const identity = req.identity.rootless ? {} : { uid: req.identity.uid, gid: req.identity.gid };
  // With aliases, carapace-launch (root, static, an empty environment like bwrap's) binds them in
  // a mount namespace of its own, becomes the sandbox's uid and execs bwrap: the same process, so
  // everything below holds either way.
  const child = viaLauncher
    ? spawn(
        nativeLauncher(),
        [
          '--uid',
          String(req.identity.uid),
          '--gid',
          String(req.identity.gid),
          ...aliases.flatMap(([fd, alias]) => ['--alias', String(fds.get(fd)), alias]),
          '--',
          bwrapBinary(),
          ...args,
        ],
        {
          stdio: stdio as ('pipe' | 'inherit' | 'ignore' | number)[],
          env: {},
          detached: req.detached === true,
        },
      )
    : spawn(bwrapBinary(), args, {
        stdio: stdio as ('pipe' | 'inherit' | 'ignore' | number)[],
        env: {},
        // A session of its own: a Ctrl-C at our terminal, our process group's end, is not its.
        detached: req.detached === true,
        ...identity,
      });
  if (devNull !== null) closeSync(devNull); // the child has its own
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
  const envPipe = pipes[FD_ENV] as Writable;
  envPipe.on('error', () => {});
  envPipe.end(environment);

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
  // A step on the init's pid that fails: when bwrap itself has failed setting the sandbox up (it
  // reports the pid before the mounts), the pid is gone already, and bwrap's message is the reason.
  const refuse = async (what: string, err: unknown): Promise<never> => {
    child.kill('SIGKILL');
    await exitedRaw;
    await log.ended;
    if (log.text.trim() !== '') throw new SandboxStartError(`the sandbox did not start: ${log.reason(null)}`);
    throw new SandboxStartError(`${what}: ${(err as Error).message}`);
  };
  // Read while the init is held on --block-fd: it cannot have exited, and if it was killed it is
  // a zombie bwrap has not reaped, its pid still its own. Once released it may exit at once and
  // its pid be reused: a start time read then could be another process's, which the mask guard
  // would enter and a sweep would take for the sandbox alive.
  const initStart = processStart(initPid);
  if (initStart === null)
    return refuse("cannot read the sandbox's start time", new Error(`/proc/${initPid}/stat is gone`));
  try {
    req.cgroup?.enter(initPid);
  } catch (err) {
    return refuse('cannot move the sandbox into its cgroup', err);
  }
  try {
    setOomScoreFloor(initPid, req.identity.rootless);
  } catch (err) {
    return refuse("cannot set the sandbox's oom_score_adj", err);
  }
  const block = pipes[FD_BLOCK] as Writable;
  block.on('error', () => {});
  block.end('1');

  // Exited once the event fd is read to its end too: what the init reported last is delivered
  // before the caller closes its audit.
  const eventsRead = new Promise<void>((resolve) => {
    const events = pipes[FD_EVENTS] as Readable | null;
    if (!events) return resolve();
    events.once('close', resolve);
    events.once('error', () => resolve());
  });
  const exited = Promise.all([exitedRaw, eventsRead]).then(([{ code, signal }]) => ({
    code: code ?? 128 + (signal ? signalNumber(signal) : 0),
  }));
  const sandbox = new RunningSandbox(child, initPid, initStart, exited, log);
  readLines(pipes[FD_STATUS] as Readable, (e) => sandbox.events.push(e));
  if (pipes[FD_EVENTS]) readLines(pipes[FD_EVENTS] as Readable, (e) => sandbox.deliver(e));
  // Once the agent runs, anything bwrap still says is not a start failure: pass it on.
  if (io === 'inherit') {
    void agentStarted(sandbox).then((ok) => {
      if (ok) log.forwardTo(process.stderr);
    });
  }
  if (req.detached) {
    // Running (or failed, which the caller learns from agentStarted): either way, ours no more.
    void agentStarted(sandbox).then(() => sandbox.release());
  }
  return sandbox;
}

/**
 * The sandbox starts at oom_score_adj max(0, Carapace's own), and can never go lower. A sandbox
 * may write its own oom_score_adj (shells do: the init grants write on /proc), and the kernel lets
 * a process without CAP_SYS_RESOURCE lower it down to the floor it inherited: a Carapace started
 * by a service protected from the OOM killer (OOMScoreAdjust=-1000) would otherwise hand that
 * protection to every agent, which could then exhaust host memory and have other processes
 * killed in its place. Root's write sets the floor (oom_score_adj_min) too, for PID 1 and every
 * process it will start; the init is still blocked, so nothing in the sandbox has run yet.
 * Rootless, the value is raised when it is negative but the floor stays the user's own.
 */
function setOomScoreFloor(initPid: number, rootless: boolean): void {
  const file = `/proc/${initPid}/oom_score_adj`;
  const current = Number(readFileSync(file, 'utf8'));
  const floor = Math.max(0, current);
  if (rootless && floor === current) return;
  try {
    writeFileSync(file, String(floor));
  } catch (err) {
    // Rootless, this is the user's own value to keep; as root, a start that cannot is refused.
    if (!rootless) throw err;
  }
}

/**
 * The agent's environment as --env-fd reads it: "NAME=VALUE\0" per variable. A name must be
 * non-empty and hold neither '=' nor NUL, a value no NUL (execve could not carry them).
 */
export function environmentBytes(env: Record<string, string>): Buffer {
  let text = '';
  for (const [name, value] of Object.entries(env)) {
    if (name === '' || name.includes('=') || name.includes('\0') || value.includes('\0')) {
      throw new SandboxStartError(
        `environment variable ${JSON.stringify(name)}: a name must be non-empty without '=' or NUL, a value without NUL`,
        2,
      );
    }
    text += `${name}=${value}\0`;
  }
  return Buffer.from(text, 'utf8');
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

/** Calls `each` with every JSON line of an init fd (a line that is not JSON as `unparsed`). */
function readLines(stream: Readable, each: (e: InitEvent) => void): void {
  let buffered = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    buffered += chunk;
    let nl: number;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, nl).trim();
      buffered = buffered.slice(nl + 1);
      if (!line) continue;
      let parsed: InitEvent;
      try {
        parsed = JSON.parse(line) as InitEvent;
      } catch {
        parsed = { event: 'unparsed', line };
      }
      each(parsed);
    }
  });
  stream.on('error', () => {});
}

function signalNumber(sig: NodeJS.Signals): number {
  return osConstants.signals[sig] ?? 0;
}
