/**
 * One sandbox under the runtime: a small state machine around what the driver started.
 *
 *   creating ──▶ running ──▶ stopping ──▶ stopped
 *       │           │            │
 *       └──────────┴────────────┴──────▶ failed
 *
 * `stop(grace)` asks the agent to end (SIGTERM, which the init forwards), and after `grace` ms
 * kills the whole sandbox at once (SIGKILL to PID 1 takes its pid namespace with it). A sandbox
 * that ends by itself goes to `stopped` (exit status recorded) or, when it never ran, `failed`.
 * Listeners hear every transition, in order.
 */
import { RuntimeError, type DriverSandbox, type SandboxState } from './driver.js';

export interface StateChange {
  id: string;
  from: SandboxState;
  to: SandboxState;
  /** Exit status when the agent ended; a reason when it failed. */
  exitCode?: number | undefined;
  reason?: string | undefined;
}

const NEXT: Record<SandboxState, readonly SandboxState[]> = {
  creating: ['running', 'failed', 'stopped'],
  running: ['stopping', 'stopped', 'failed'],
  stopping: ['stopped', 'failed'],
  stopped: ['creating'],
  failed: ['creating'],
};

export class ManagedSandbox {
  private current: SandboxState = 'creating';
  private readonly listeners = new Set<(c: StateChange) => void>();
  private driven: DriverSandbox | null = null;
  exitCode: number | null = null;
  reason: string | null = null;

  constructor(
    readonly id: string,
    readonly name: string,
    readonly ownerUid: number,
  ) {}

  get state(): SandboxState {
    return this.current;
  }

  get sandbox(): DriverSandbox | null {
    return this.driven;
  }

  onChange(listener: (c: StateChange) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Runs `start` (the driver's), then follows the sandbox until it ends. */
  async run(
    start: () => Promise<DriverSandbox>,
    onSpawned?: (sb: DriverSandbox) => void,
  ): Promise<DriverSandbox> {
    if (this.current !== 'creating') this.move('creating');
    let started: DriverSandbox;
    try {
      started = await start();
    } catch (err) {
      this.move('failed', { reason: err instanceof Error ? err.message : String(err) });
      throw err;
    }
    this.driven = started;
    // Before anything waits: a quick agent's output must find its reader (Node drops what a
    // child wrote to a pipe nobody reads by the time it exits).
    onSpawned?.(started);
    void started.exited.then((code) => {
      this.exitCode = code;
      if (this.current === 'running' || this.current === 'stopping') this.move('stopped', { exitCode: code });
    });
    // Running once the agent runs: the init takes signals (stop) only from then on.
    if (await started.ready) {
      this.move('running');
      // An agent quick enough to have exited already.
      if (this.exitCode !== null) this.move('stopped', { exitCode: this.exitCode });
    } else {
      this.fail(`the sandbox did not start: ${started.whyNotStarted(await started.exited)}`);
    }
    return started;
  }

  /** Follows a sandbox found running (started by an earlier process) until it ends. */
  adopt(sb: DriverSandbox): void {
    if (this.current !== 'creating') this.move('creating');
    this.driven = sb;
    this.move('running');
    void sb.exited.then((code) => {
      this.exitCode = code;
      if (this.current === 'running' || this.current === 'stopping') this.move('stopped', { exitCode: code });
    });
  }

  /** Marks a sandbox whose agent never ran (a start the init refused) as failed. */
  fail(reason: string): void {
    if (this.current !== 'failed') this.move('failed', { reason });
  }

  /** SIGTERM to the agent, then after `graceMs` everything killed; resolves with the exit status. */
  async stop(graceMs = 10_000): Promise<number> {
    const sb = this.driven;
    if (!sb || (this.current !== 'running' && this.current !== 'stopping')) {
      if (this.exitCode !== null) return this.exitCode;
      throw new RuntimeError('SANDBOX_NOT_RUNNING', `sandbox ${this.name} is ${this.current}, not running`);
    }
    if (this.current === 'running') this.move('stopping');
    sb.signal('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), graceMs)));
    if ((await Promise.race([sb.exited, late])) === 'late') sb.kill();
    clearTimeout(timer);
    return sb.exited;
  }

  private move(to: SandboxState, extra: { exitCode?: number; reason?: string } = {}): void {
    const from = this.current;
    if (!NEXT[from].includes(to)) {
      throw new RuntimeError('INVALID_TRANSITION', `sandbox ${this.name}: cannot go from ${from} to ${to}`);
    }
    this.current = to;
    if (extra.reason !== undefined) this.reason = extra.reason;
    const change: StateChange = { id: this.id, from, to, ...extra };
    for (const l of this.listeners) l(change);
  }
}
