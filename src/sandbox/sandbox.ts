/**
 * A sandbox's whole life on the host: identity, directories, cgroup, launch, and a cleanup that
 * leaves nothing behind (processes, cgroups, temporary workspace, runtime files).
 */
import { chmodSync, closeSync, constants, fchownSync, mkdirSync, openSync, statSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { openBinds } from './mounts/bind-sources.js';
import { SandboxCgroup } from './cgroup/cgroup.js';
import { rootlessIdentity, type IdentityRegistry, type SandboxIdentity } from './identity/identity.js';
import { launchSandbox } from './launch/launch.js';
import type { RunningSandbox } from './launch/running-sandbox.js';
import { planMounts, tmpSizeBytes, type MountPlan } from './mounts/mount-plan.js';
import { guardMasks, type MaskCheck, type MaskGuard } from './mounts/mask-guard.js';
import { makeOwnDir } from './mounts/own-dir.js';
import { baseEnvironment, type SandboxSpec } from './spec.js';
import type { StateDirs } from './state-dirs.js';
import { SandboxLock } from './sandbox-lock.js';
import { randomHex } from './keys.js';
import { seccompProgram } from './shared-files.js';
import { closeAll, WritableTreeRegistry } from './host-paths/writable-trees.js';
import { removeTree } from './host-paths/remove-tree.js';
import { SandboxControl } from './control/control.js';
import { makeControlDir, openLogFile } from './control/control-files.js';

export interface StartOptions {
  dirs: StateDirs;
  /** The host's sandbox uid registry (as root); null: rootless, the sandbox is the caller. */
  identities: IdentityRegistry | null;
  /** Remove the identity and storage when the sandbox stops (a one-off run without --name). */
  ephemeral: boolean;
  /** Remove the workspace when the sandbox stops (no --workspace was given). */
  removeWorkspace: boolean;
  bestEffortLimits: boolean;
  stdio: 'inherit' | 'pipe';
  term?: string | undefined;
  /** Cap on the Landlock ABI (simulates an older kernel). */
  landlockAbiMax?: number | undefined;
  /** Connects the sandbox to an egress proxy; without it the sandbox has no network at all. */
  network?: NetworkProvider | undefined;
  /** The run's audit file, recorded so that a crash sweep can say there the sandbox was lost. */
  auditFile?: string | undefined;
  /** The host root the sandbox mirrors (mount-plan.ts): `/`, except in tests of other layouts. */
  hostRoot?: string | undefined;
  /** Workspace and --mount sources a caller checked: the inode each must still be (bind-sources.ts). */
  expectedInodes?: ReadonlyMap<string, { dev: number; ino: number }> | undefined;
  /** Whose files a workspace handed to the sandbox's uid gives it (bind-sources.ts); unset: all. */
  handOverFrom?: number | undefined;

  // A sandbox a gateway holds (control.ts, docs/architecture.md "The control socket"):
  /**
   * The init serves a control socket in `<runtime>/control` (StartedSandbox.control); it is
   * there once `agentStarted` resolves true.
   */
  control?: boolean | undefined;
  /** Hears each time the host replaced a masked file and its mask was bound again (or could not be). */
  onMaskCheck?: ((check: MaskCheck) => void) | undefined;
  /** carapace-mask's path (mask-guard.ts): the package's own when not given. */
  masker?: string | undefined;
  /** The agent's stdout and stderr go to this file as JSON lines (its stdin is /dev/null). */
  logFile?: string | undefined;
  /** The bytes that file may hold (native/logs.c: past half, the init asks for a new one). */
  logLimitBytes?: number | undefined;
  /**
   * The sandbox survives the process that starts it: no --die-with-parent, nothing tied to this
   * process once the agent runs, and the run record is handed to the sandbox's init. Its exit is
   * then learned from the control directory's exit.json.
   */
  detached?: boolean | undefined;
}

/** What the egress side gives a sandbox: the relay's way out, and the agent's proxy settings. */
export interface NetworkAttachment {
  /** An open (O_PATH) fd of the host directory holding the proxy socket; the init inherits it. */
  relayDir: number;
  socketName: string;
  /** Proxy and CA variables for the agent. */
  env: Record<string, string>;
  /**
   * Files bound read-only inside (the CA and bundle), made when the sandbox starts and not kept:
   * a system's trust bundle is ~220 KB, which every running sandbox held in the gateway's heap.
   */
  files(): { path: string; content: string }[];
  /**
   * Called once the sandbox runs, with the init's host pid (to find callers by their socket) and
   * the sandbox's cgroups, null without limits (where helpers working for the sandbox belong).
   */
  started(initPid: number, cgroup: SandboxCgroup | null): void;
  close(): Promise<void>;
  /** Stops serving a sandbox that lives on (a gateway that exits): keeps what it will need again. */
  suspend?(): Promise<void>;
  /** A host directory the attachment made (the proxy socket's), for the crash sweep. */
  hostDir?: string;
}

export type NetworkProvider = (name: string, identity: SandboxIdentity) => Promise<NetworkAttachment>;

/**
 * A network of only the relay, to a proxy socket someone else serves in `dir` (an open directory
 * fd): no proxy variables, no CA. For tests and benchmarks of the relay itself.
 */
export function relayOnly(dir: number, socketName: string): NetworkProvider {
  return () =>
    Promise.resolve({
      relayDir: dir,
      socketName,
      env: {},
      files: () => [],
      started: () => {},
      close: async () => {},
    });
}

export interface StartedSandbox {
  spec: SandboxSpec;
  identity: SandboxIdentity;
  plan: MountPlan;
  process: RunningSandbox;
  cgroup: SandboxCgroup | null;
  /** The control socket's client (with `control`), and the directory it lives in. */
  control: SandboxControl | null;
  controlDir: string | null;
  /** Stops everything left and removes what was temporary. Safe to call twice. */
  cleanup(): Promise<void>;
}

/** The key of a sandbox's host resources: its id, or (a one-off run) its name. */
export function sandboxId(spec: Pick<SandboxSpec, 'id' | 'name'>): string {
  return spec.id ?? spec.name;
}

export function newSandboxName(): string {
  return `run-${randomHex(4)}`;
}

/** Directories of a sandbox: runtime (generated files) and storage (read-write paths). */
export function sandboxPaths(dirs: StateDirs, name: string) {
  return {
    runtime: join(dirs.run, 'sandboxes', name),
    storage: join(dirs.state, 'sandboxes', name),
    defaultWorkspace: join(dirs.state, 'sandboxes', name, 'workspace'),
  };
}

export async function startSandbox(spec: SandboxSpec, opts: StartOptions): Promise<StartedSandbox> {
  // The id keys everything on the host (paths, lock, cgroups, uid record, proxy socket); the name
  // is the owner's label and the sandbox's hostname. A one-off run's id is its name.
  const id = sandboxId(spec);
  const paths = sandboxPaths(opts.dirs, id);
  prepareStateDirs(opts.dirs);
  // Cgroups are host-wide, state directories are not: each start gets its own cgroup directory,
  // so two sandboxes of one name (two users, two state directories) never share or remove one.
  const cgroupKey = `${id}.${randomHex(4)}`;
  // Written down with the lock, before any of it exists: a crash from here on leaves a record to
  // sweep (one file made, not a second to replace it: each is a start's costliest step).
  const lock = SandboxLock.acquire(join(opts.dirs.run, 'sandboxes'), id, {
    state: opts.dirs.state,
    runtime: paths.runtime,
    cgroupKey,
    ...(opts.removeWorkspace ? { tempWorkspace: spec.workspace } : {}),
    ...(opts.ephemeral ? { ephemeralStorage: paths.storage } : {}),
    ...(opts.auditFile !== undefined ? { audit: opts.auditFile } : {}),
    startedAt: new Date().toISOString(),
  });
  const registry = opts.identities;
  const owner = { state: opts.dirs.state, name: id };
  let identity: SandboxIdentity | null = null;
  let cgroup: SandboxCgroup | null = null;
  let network: NetworkAttachment | null = null;
  let bindFds: number[] = [];
  let hostFds: number[] = [];
  let guard: MaskGuard | null = null;
  const undo = async () => {
    guard?.close();
    closeAll(bindFds);
    bindFds = [];
    closeAll(hostFds);
    hostFds = [];
    cgroup?.destroy();
    await network?.close();
    await rm(paths.runtime, { recursive: true, force: true });
    if (opts.removeWorkspace) await removeTree(spec.workspace);
    if (opts.ephemeral) {
      await removeTree(paths.storage);
      // Freed only if nothing of the uid is left at the workspace's or storage's root.
      await registry?.release(owner);
    }
    lock.release();
  };
  try {
    identity = registry
      ? await registry.acquire(
          owner,
          [spec.workspace, paths.storage],
          opts.ephemeral ? spec.workspace : undefined,
        )
      : rootlessIdentity();
    prepareStorage(paths.storage, identity);
    if (opts.network) {
      network = await opts.network(id, identity);
      if (network.hostDir !== undefined) lock.note({ net: network.hostDir });
    }
    const { own, files } = makeOwnDir(opts.dirs.run, paths.runtime, spec, network?.files() ?? []);
    const plan = planMounts({
      readOnly: spec.readOnly,
      readWrite: spec.readWrite,
      workspace: spec.workspace,
      storage: paths.storage,
      mounts: spec.mounts,
      files,
      own,
      tmpBytes: tmpSizeBytes(spec.limits.memoryBytes),
      hostRoot: opts.hostRoot,
    });
    // Armed before bwrap lays the masks: a rename from here on is seen (mask-guard.ts).
    guard = guardMasks(plan, paths.runtime, opts.hostRoot ?? '/', opts.onMaskCheck, {
      adoptable: opts.detached === true,
      masker: opts.masker,
    });
    // Everything bound from a tree a sandbox can write, opened without following its symlinks
    // (and the workspace made and handed over on the way).
    const binds = openBinds({
      plan,
      name: id,
      identity,
      workspace: spec.workspace,
      landlock: spec.landlock,
      registry: new WritableTreeRegistry(opts.dirs),
      runtime: paths.runtime,
      expected: opts.expectedInodes,
      handOverFrom: opts.handOverFrom,
    });
    bindFds = binds.fds;
    const controlDir = opts.control ? join(paths.runtime, 'control') : null;
    const controlFd = controlDir !== null ? makeControlDir(controlDir, identity) : undefined;
    if (controlFd !== undefined) hostFds.push(controlFd);
    // After openBinds: this sandbox's own trees are known by then.
    const logFd =
      opts.logFile !== undefined
        ? openLogFile(opts.logFile, new WritableTreeRegistry(opts.dirs).trees())
        : undefined;
    if (logFd !== undefined) hostFds.push(logFd);
    cgroup = SandboxCgroup.create(cgroupKey, spec.limits, opts.bestEffortLimits);
    const seccomp = await seccompProgram(opts.dirs.run);
    const process = await launchSandbox({
      name: spec.name,
      identity,
      plan,
      env: { ...baseEnvironment(spec, opts.term), ...network?.env },
      command: spec.command,
      landlock: spec.landlock,
      landlockAbiMax: opts.landlockAbiMax,
      listenPorts: spec.listenPorts,
      openFiles: spec.limits.openFiles,
      nproc: spec.limits.pids,
      seccomp,
      relay: network ? { dir: network.relayDir, socketName: network.socketName } : undefined,
      cgroup,
      stdio: opts.stdio,
      aliases: binds.aliases,
      controlDir: controlFd,
      logFile: logFd,
      logLimitBytes: opts.logLimitBytes,
      detached: opts.detached,
    });
    // bwrap holds its own copies (or has bound them already).
    closeAll(bindFds);
    bindFds = [];
    closeAll(hostFds);
    hostFds = [];
    // The sandbox's init owns the run record from now on: it may outlive us.
    if (opts.detached) lock.handOver(process.initPid, process.initStart);
    guard?.attach(process.initPid, process.initStart);
    network?.started(process.initPid, cgroup);
    // One cleanup, however many callers: each waits for it to finish (a second caller returning at
    // once would find the lock still held, and a start right after would be refused).
    let cleaning: Promise<void> | null = null;
    return {
      spec,
      identity,
      plan,
      process,
      cgroup,
      control: controlDir !== null ? new SandboxControl(join(controlDir, 'control.sock')) : null,
      controlDir,
      cleanup: () => (cleaning ??= undo()),
    };
  } catch (err) {
    await undo();
    throw err;
  }
}

function prepareStateDirs(dirs: StateDirs): void {
  // Sandbox uids must traverse these to reach their own workspace and runtime files; they cannot
  // list them (0711), and each sandbox's own directory below is 0700 and owned by its uid.
  for (const d of [dirs.state, dirs.run, join(dirs.state, 'sandboxes'), join(dirs.run, 'sandboxes')]) {
    mkdirSync(d, { recursive: true, mode: 0o711 });
    chmodSync(d, 0o711);
  }
  if (dirs.home && dirname(dirs.state) === dirs.home) chmodSync(dirs.home, statSync(dirs.home).mode | 0o111);
}

/**
 * The sandbox's own storage directory (its read_write paths live beneath), given to its uid. Our
 * state directory is root's; the chown goes through the fd of what was made.
 */
function prepareStorage(storage: string, identity: SandboxIdentity): void {
  mkdirSync(storage, { recursive: true, mode: 0o700 });
  if (identity.rootless) return;
  const fd = openSync(storage, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
  try {
    fchownSync(fd, identity.uid, identity.gid);
  } finally {
    closeSync(fd);
  }
}
