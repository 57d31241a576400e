/**
 * The contract between the runtime and what runs sandboxes, modelled on OpenShell's
 * `compute_driver.proto`: a driver provisions, starts, stops, deletes and observes sandboxes; it
 * does not judge policy or keep the gateway's records. Bubblewrap on this host is the one driver
 * today (bubblewrap-driver.ts); a Kubernetes driver would implement the same interface.
 */
import type { MaskCheck } from '../sandbox/mounts/mask-guard.js';
import type { SandboxSpec } from '../sandbox/spec.js';
import type { NetworkProvider } from '../sandbox/sandbox.js';

/** A sandbox's life: `creating → running → stopping → stopped | failed`, and back to creating. */
export type SandboxState = 'creating' | 'running' | 'stopping' | 'stopped' | 'failed';

export const SANDBOX_STATES: readonly SandboxState[] = [
  'creating',
  'running',
  'stopping',
  'stopped',
  'failed',
];

/** What the driver is asked to start. */
export interface DriverStartRequest {
  spec: SandboxSpec;
  /** The owner's uid (the gateway's caller); a one-off run's is the process's own. */
  ownerUid: number;
  /** The sandbox's way out through the egress proxy; none: no network at all. */
  network?: NetworkProvider | undefined;
  /** Remove the workspace when the sandbox is gone (a temporary one). */
  removeWorkspace: boolean;
  /** Remove storage and uid record when the sandbox is gone (a one-off run without a name). */
  ephemeral: boolean;
  bestEffortLimits: boolean;
  /** Where the sandbox's stdio goes: this process's (a one-off run), or pipes. */
  stdio: 'inherit' | 'pipe';
  auditFile?: string | undefined;
  term?: string | undefined;
  landlockAbiMax?: number | undefined;
  hostRoot?: string | undefined;
  /** Host paths the caller checked, and the inode each must still be. */
  expectedInodes?: ReadonlyMap<string, { dev: number; ino: number }> | undefined;
  /**
   * Whose files a workspace handed to the sandbox's uid gives it (the gateway's caller): another
   * uid's file in it (moved in from a shared directory) stays theirs. Unset: everything in it.
   */
  handOverFrom?: number | undefined;
  /** A sandbox a gateway holds: a control socket, its output in `logFile`, and it outlives us. */
  control?: boolean | undefined;
  logFile?: string | undefined;
  /** The bytes one log file may hold (the init asks for the next one past half: agent-log.ts). */
  logLimitBytes?: number | undefined;
  detached?: boolean | undefined;
  /** Hears each time the host replaced a masked file while the sandbox ran (mask-guard.ts). */
  onMaskCheck?: ((check: MaskCheck) => void) | undefined;
}

/** One started sandbox, as the driver sees it. */
export interface DriverSandbox {
  readonly id: string;
  /** The init's host pid (PID 1 inside). */
  readonly pid: number;
  /**
   * Resolves once the agent runs (true), or the sandbox failed before it could (false). Signals
   * sent before then may be lost: the init takes them only once it is set up.
   */
  readonly ready: Promise<boolean>;
  /** Resolves with the agent's exit status once the sandbox is gone. */
  readonly exited: Promise<number>;
  /**
   * Why the agent never ran, as one line (the init's own report, or what bwrap said), once `ready`
   * resolved false and `exited` with `status`.
   */
  whyNotStarted(status: number): string;
  /** Forwards a signal to the agent (through the init). */
  signal(sig: NodeJS.Signals): void;
  /** Kills every process of the sandbox at once. */
  kill(): void;
  /** Removes what the sandbox had on the host and was temporary. Safe to call twice. */
  release(): Promise<void>;
}

export interface SandboxDriver {
  readonly name: string;
  start(req: DriverStartRequest): Promise<DriverSandbox>;
  /** A sandbox started by an earlier process that still runs (a restarted gateway), or null. */
  adopt(id: string, onMaskCheck?: (check: MaskCheck) => void): DriverSandbox | null;
}

/** Errors of the runtime carry a stable code; the API maps each to one status. */
export class RuntimeError extends Error {
  override name = 'RuntimeError';
  constructor(
    readonly code: 'SANDBOX_NOT_RUNNING' | 'SANDBOX_BUSY' | 'SANDBOX_START_FAILED' | 'INVALID_TRANSITION',
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
  }
}
