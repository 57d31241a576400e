/**
 * A gateway's sandbox's agent output log, `<state>/logs/<id>.log`, and its rotated generations
 * `<id>.log.1` (the most recent) … `<id>.log.<files-1>` (docs/gateway.md, "The agent's output
 * log").
 *
 * Threat: the agent decides how much it writes (`yes` writes as fast as the init can log), and the
 * host's disk is shared. The sandbox's own init (native/logs.c) writes the file through a
 * descriptor the gateway opened, counts what it wrote, and never takes one file past
 * `maxFileBytes`: past half, it asks for a new file (a `log` event on the control socket's event
 * stream); full, it drops the agent's output (the agent never blocks) and counts it. Here the
 * gateway answers the request: the current file becomes `.1` (each `.k` becomes `.k+1`, the
 * oldest is dropped), a new empty file takes its name, and the init gets the new descriptor (the
 * control socket's `log` op). The lines the init writes between the rename and the switch land in
 * `.1`, whole; its first line in the new file says what it dropped, if anything. A sandbox's log so
 * takes at most `maxFileBytes × files` of the host's disk, whatever it writes.
 *
 * Assumption: `<state>/logs` is the gateway's own (0700), never inside a tree a sandbox can write
 * (control-files.ts refuses that for the first file). Nothing here follows a symlink even so: the
 * directory is held open and names are reached through it (AuditDirectory, audit-files.ts), a new
 * file is created O_EXCL|O_NOFOLLOW under a name of its own and renamed into place, an existing one
 * opened O_NOFOLLOW; a symlink where a generation goes is renamed over, never written through.
 *
 * At least once: an event comes again after a gateway restart unless it was acknowledged, and a
 * gateway may die between the rename and the hand-over. So the event names the file the init
 * writes (DEV:INO): when `<id>.log` is not that file any more, it was rotated already, and the init
 * only needs it handed over (again), which changes nothing when it has it already.
 */
import { closeSync, constants, fstatSync, lstatSync, openSync } from 'node:fs';
import { AuditDirectory, generationNames, type AuditRotation } from '../../audit/index.js';
import type { ControlLogEvent, SandboxControl } from '../../sandbox/control/control.js';

/** How big one agent log file grows, and how many are kept (the current one included). */
export type LogRotation = AuditRotation;

/**
 * 16 MiB × 2 = 32 MiB per sandbox: the init asks for a new file at 8 MiB, so the last 8 to 16 MiB
 * of output are always there (tens of thousands of lines); a user at the default quota of 32
 * sandboxes holds at most 1 GiB of logs.
 */
export const DEFAULT_LOG_ROTATION: LogRotation = { maxFileBytes: 16 * 1024 * 1024, files: 2 };

/** The file the init writes to cannot be rotated or opened as it must (a name that is not a regular file). */
export class AgentLogError extends Error {
  override name = 'AgentLogError';
  constructor(
    readonly code: 'agent-log-not-regular',
    message: string,
  ) {
    super(message);
  }
}

const APPEND = constants.O_WRONLY | constants.O_APPEND | constants.O_NOFOLLOW | constants.O_NONBLOCK;

export class AgentLogs {
  readonly dir: AuditDirectory;

  constructor(
    path: string,
    readonly rotation: LogRotation = DEFAULT_LOG_ROTATION,
  ) {
    this.dir = new AuditDirectory(path);
  }

  /** The current file's path (the launch opens it: control-files.ts's openLogFile). */
  path(id: string): string {
    return `${this.dir.path}/${id}.log`;
  }

  /** The current file's name in the directory. */
  base(id: string): string {
    return `${id}.log`;
  }

  /** The files of a sandbox's log, oldest first, opened for reading (the caller closes them). */
  openAll(id: string): { name: string; fd: number; size: number }[] {
    const files = [];
    for (const name of this.names(id)) {
      const file = this.dir.openForReading(name);
      if (file) files.push({ name, ...file });
    }
    return files;
  }

  /**
   * The names a sandbox's log may have now, oldest first, current last: those of this rotation,
   * and older ones a gateway with more FILES left (kept until the sandbox is deleted).
   */
  names(id: string): string[] {
    return generationNames(this.base(id), this.rotation);
  }

  /** The identity ("DEV:INO") of the file named `name` (never a symlink's target); null when absent. */
  identity(name: string): string | null {
    try {
      const st = lstatSync(this.dir.at(name), { bigint: true });
      return st.isFile() ? `${st.dev}:${st.ino}` : null;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
  }

  /**
   * Answers the init's request for a new file (see the top of this file): rotates when the current
   * file is the one it writes, then hands it the current file. Returns whether it rotated.
   */
  async answer(id: string, control: SandboxControl, event: Pick<ControlLogEvent, 'file'>): Promise<boolean> {
    const base = this.base(id);
    const rotate = this.identity(base) === event.file;
    const fd = rotate ? this.rotate(base) : this.openCurrent(base);
    try {
      await control.log(fd, this.rotation.maxFileBytes);
    } finally {
      closeSync(fd);
    }
    return rotate;
  }

  /**
   * A re-adopted sandbox's log, settled before its events are read: rotated when the current file
   * is past half (a request lost to a failed answer, or to a gateway that died before it
   * acknowledged one), else the current file handed over again. Either way the init then has this
   * gateway's SIZE, and a file whose rotation a killed gateway left half done.
   */
  async resume(id: string, control: SandboxControl): Promise<boolean> {
    const base = this.base(id);
    let size = 0;
    try {
      size = lstatSync(this.dir.at(base)).size;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    const full = size >= this.rotation.maxFileBytes / 2;
    return this.answer(id, control, { file: full ? (this.identity(base) ?? '') : '' });
  }

  /** Removes a sandbox's log files, every generation (whatever FILES was) and a leftover `.new`. */
  remove(id: string): Promise<void> {
    return this.dir.remove(this.base(id));
  }

  close(): void {
    this.dir.close();
  }

  /** The current file, open for appending (made when missing), never through a symlink. */
  private openCurrent(base: string): number {
    const fd = openSync(this.dir.at(base), APPEND | constants.O_CREAT, 0o600);
    if (!fstatSync(fd).isFile()) {
      closeSync(fd);
      throw new AgentLogError(
        'agent-log-not-regular',
        `agent log ${this.dir.path}/${base} is not a regular file`,
      );
    }
    return fd;
  }

  /**
   * `base` becomes `.1`, each `.k` becomes `.k+1`, the oldest is dropped, and a new empty `base`
   * is in place; returns the new file's descriptor. The new file is made first, under a name of
   * its own: a failure there changes nothing.
   */
  private rotate(base: string): number {
    return this.dir.rotate(base, this.rotation, APPEND, false).fd;
  }
}
