/**
 * bwrap's and carapace-init's arguments for one launch (launch.ts starts them): the fds each of them
 * is handed, the mount plan as bwrap options, and what the init applies before it execs the agent.
 */
import type { SandboxCgroup } from '../cgroup/cgroup.js';
import type { SandboxIdentity } from '../identity/identity.js';
import { SANDBOX_UID_INSIDE } from '../identity/identity.js';
import { mountArgs } from '../mounts/mount-args.js';
import type { MountOp, MountPlan } from '../mounts/mount-plan.js';
import { INIT_PATH, WORKSPACE_PATH } from '../spec.js';

export interface LaunchRequest {
  name: string;
  identity: SandboxIdentity;
  plan: MountPlan;
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
  /** An O_PATH fd of the control directory (control-files.ts): the init serves control.sock there. */
  controlDir?: number | undefined;
  /** A log file open for appending: the agent's stdout and stderr go there as JSON lines. */
  logFile?: number | undefined;
  /** The bytes that file may hold before the init drops lines and asks for a new one (0/absent: no limit). */
  logLimitBytes?: number | undefined;
  /** Survive the death of the process that starts it (see above). */
  detached?: boolean | undefined;
}

export const FD_INFO = 3;
export const FD_BLOCK = 4;
export const FD_STATUS = 5;
export const FD_SECCOMP = 6;
export const FD_ENV = 7;
export const FD_EVENTS = 8;
export const FD_RELAY = 9;
/** The agent's stderr; bwrap's own fd 2 is the start-log pipe. */
export const FD_AGENT_STDERR = 10;
export const FD_CONTROL = 11;
export const FD_LOG = 12;
/** The first of the fds bwrap binds (--bind-fd), one per fd-bind, in plan order. */
export const FD_FIRST_BIND = 13;

type FdBind = Extract<MountOp, { kind: 'fd-bind' }>;

/** The fd each fd-bind has in bwrap (or in carapace-launch, for the aliased ones). */
export function bindFds(plan: MountPlan): Map<number, number> {
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
    ...(req.detached ? [] : ['--die-with-parent']),
    '--new-session',
    '--as-pid-1',
    '--info-fd',
    String(FD_INFO),
    '--block-fd',
    String(FD_BLOCK),
    // The plan binds the init at INIT_PATH, with Carapace's own directory (own-dir.ts).
    ...mountArgs(req.plan, fdBindArgs(req, bindFds(req.plan))),
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
    '--env-fd',
    String(FD_ENV),
    // Detached, the events go to the control socket only: a pipe to us would die with us.
    ...(req.detached ? [] : ['--event-fd', String(FD_EVENTS)]),
    '--stderr-fd',
    String(FD_AGENT_STDERR),
    '--landlock',
    req.landlock,
  ];
  if (req.landlockAbiMax !== undefined) args.push('--landlock-abi-max', String(req.landlockAbiMax));
  for (const p of req.plan.landlockReadOnly) args.push('--ro', p);
  for (const p of req.plan.landlockReadWrite) args.push('--rw', p);
  for (const p of req.plan.landlockListDirs) args.push('--list', p);
  // Shells write /proc/self/oom_score_adj on every command; the kernel alone decides what such a
  // write may change (docs/security.md, "Writable /proc": nothing outside the sandbox's own
  // processes, /proc/sys read-only, PID 1's files root's).
  if (req.plan.landlockReadOnly.includes('/proc')) args.push('--write-files', '/proc');
  for (const p of req.listenPorts) args.push('--bind-port', String(p));
  if (req.openFiles !== undefined) args.push('--nofile', String(req.openFiles));
  if (req.nproc !== undefined) args.push('--nproc', String(req.nproc));
  if (req.relay) args.push('--relay-dir-fd', String(FD_RELAY), '--relay-socket', req.relay.socketName);
  if (req.controlDir !== undefined) args.push('--control-dir-fd', String(FD_CONTROL));
  if (req.logFile !== undefined) args.push('--log-fd', String(FD_LOG));
  if (req.logFile !== undefined && req.logLimitBytes) args.push('--log-limit', String(req.logLimitBytes));
  return args;
}
