/**
 * A sandbox this process did not start: a restarted gateway finds it running and takes it over.
 *
 * It is known by its run record (src/sandbox/sandbox-lock.ts), whose owner is the sandbox's init
 * once it runs detached: the init's host pid AND its start time, so that a pid reused by another
 * process is never taken for it (signals are sent only after the start time is checked again).
 * Its end is learned from the control directory's `exit.json` (the init writes it last), or, when
 * the init was killed before it could, from the pid no longer being that process.
 */
import { existsSync, readFileSync, watch, type FSWatcher } from 'node:fs';
import { join } from 'node:path';
import { processStart } from '../sandbox/processes.js';
import type { RunRecord } from '../sandbox/sandbox-lock.js';
import type { DriverSandbox } from './driver.js';

/** How often a sandbox whose init may have been killed (no exit.json) is looked at. */
const LIVENESS_MS = 1_000;

export class AdoptedSandbox implements DriverSandbox {
  readonly ready = Promise.resolve(true);
  readonly exited: Promise<number>;
  private watcher: FSWatcher | null = null;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    readonly id: string,
    readonly record: RunRecord,
    readonly controlDir: string,
    private readonly cleanup: () => Promise<void>,
  ) {
    this.exited = new Promise<number>((resolve) => {
      const done = (code: number) => {
        this.watcher?.close();
        if (this.timer) clearInterval(this.timer);
        resolve(code);
      };
      const look = () => {
        const code = this.exitCode();
        if (code !== null) done(code);
        else if (!this.alive()) done(this.exitCode() ?? 128 + 9);
      };
      try {
        this.watcher = watch(controlDir, (_e, file) => {
          if (file === 'exit.json') look();
        });
        this.watcher.on('error', () => {});
      } catch {
        // no directory any more: the liveness check decides
      }
      this.timer = setInterval(look, LIVENESS_MS);
      this.timer.unref();
      look();
    });
  }

  get pid(): number {
    return this.record.pid;
  }

  /** Never asked: an adopted sandbox's agent ran (`ready` is true). */
  whyNotStarted(status: number): string {
    return `the init failed (exit ${status})`;
  }

  /** Whether the pid is still the init that owns the record. */
  alive(): boolean {
    return processStart(this.record.pid) === this.record.start;
  }

  signal(sig: NodeJS.Signals): void {
    if (!this.alive()) return;
    try {
      process.kill(this.record.pid, sig);
    } catch {
      // gone meanwhile
    }
  }

  kill(): void {
    this.signal('SIGKILL');
  }

  release(): Promise<void> {
    return this.cleanup();
  }

  private exitCode(): number | null {
    const file = join(this.controlDir, 'exit.json');
    if (!existsSync(file)) return null;
    try {
      const { code } = JSON.parse(readFileSync(file, 'utf8')) as { code: unknown };
      return Number.isInteger(code) ? (code as number) : null;
    } catch {
      return null;
    }
  }
}
