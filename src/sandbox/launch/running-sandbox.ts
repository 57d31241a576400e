/**
 * A started sandbox as the process that launched it holds it (launch.ts makes one): the bwrap child,
 * the init's host pid, what the init reports on its status and event fds, and bwrap's own start log.
 */
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import type { Readable, Writable } from 'node:stream';
import { FD_AGENT_STDERR, FD_STATUS } from './launch-args.js';

/** One JSON object the init wrote on its status fd. */
export interface InitEvent {
  event: string;
  [key: string]: unknown;
}

export interface SandboxExit {
  /** The agent's exit code, 128+signal when it was killed, 125-127 when the start failed. */
  code: number;
}

/** Events kept for a listener that has not subscribed yet; beyond this, the oldest are dropped. */
const UNHEARD_EVENTS_KEPT = 1024;

export class RunningSandbox {
  /** What the init applied, from its status fd (complete once `agentStarted` resolves). */
  readonly events: InitEvent[] = [];
  readonly exited: Promise<SandboxExit>;
  private readonly listeners = new Set<(e: InitEvent) => void>();
  private unheard: InitEvent[] = [];

  constructor(
    readonly child: ChildProcess,
    readonly initPid: number,
    /** The init's start time (/proc/<pid>/stat field 22), read before it ran: with the pid, who it is. */
    readonly initStart: number,
    exited: Promise<SandboxExit>,
    private readonly bwrapLog: StartLog,
  ) {
    this.exited = exited;
  }

  /**
   * Events the init reports while the sandbox runs, from its event fd: `connect`, a connection the
   * sandbox refused (docs/architecture.md, "Event lines"). Those that came before the first
   * listener are replayed to it. Returns the unsubscribe function.
   */
  onEvent(listener: (e: InitEvent) => void): () => void {
    this.listeners.add(listener);
    const earlier = this.unheard;
    this.unheard = [];
    for (const e of earlier) listener(e);
    return () => this.listeners.delete(listener);
  }

  /** @internal launchSandbox's reader of the event fd. */
  deliver(e: InitEvent): void {
    if (this.listeners.size === 0) {
      if (this.unheard.length === UNHEARD_EVENTS_KEPT) this.unheard.shift();
      this.unheard.push(e);
      return;
    }
    for (const l of this.listeners) l(e);
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
  startReason(status: number | string | null): string {
    return this.bwrapLog.reason(status);
  }
  get stdin(): Writable | null {
    return this.child.stdin;
  }

  /**
   * Lets the sandbox go: nothing of ours (the bwrap child, its pipes) keeps this process alive any
   * more, so it may exit while the sandbox runs on. `exited` still resolves if it lives to see it.
   */
  release(): void {
    this.child.unref();
    for (const stream of this.child.stdio) (stream as { unref?: () => void } | null)?.unref?.();
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

/**
 * bwrap's stderr: kept (bounded) until the agent runs, for the reason of a failed start. Nothing
 * of the agent's ever arrives here: the init moves the agent's stderr to fd 2 first thing.
 */
export class StartLog {
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
