/**
 * Where audit events go: JSON lines appended to a file (and, for the gateway later, to live
 * subscribers). Writes are synchronous appends so a line is on disk before the decision it records
 * takes effect for the caller; a crash never loses an acknowledged refusal.
 */
import { closeSync, fdatasyncSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { printableJson } from '../policy/printable.js';
import type { OcsfEvent } from './ocsf.js';

export interface AuditSink {
  emit(event: OcsfEvent): void;
  /**
   * Appends the event together with the others emitted this turn of the event loop (one write for
   * them all), resolving once it is written. What the event records must wait for it: the line is
   * still written before the decision takes effect. Sinks without it are written to with emit.
   */
  emitAhead?(event: OcsfEvent): Promise<void>;
}

/** `sink.emitAhead` where the sink has it; else `emit`, at once. */
export function emitAhead(sink: AuditSink, event: OcsfEvent): Promise<void> | undefined {
  if (sink.emitAhead) return sink.emitAhead(event);
  sink.emit(event);
  return undefined;
}

/**
 * One event as one line of JSON. JSON.stringify escapes C0 controls only; DEL, the C1 controls and
 * Unicode's invisible and bidirectional format characters would reach a terminal that shows the
 * file (`tail -f`, `less`) raw, and a sandbox chooses some of these strings (its executables'
 * names). They are written as `\uXXXX` escapes (src/policy/printable.ts, the rule every view of
 * Carapace's uses): the same JSON value, nothing a terminal acts on.
 */
function jsonLine(event: OcsfEvent): string {
  return printableJson(event) + '\n';
}

/**
 * Writes all of `text` or throws. write(2) may write part of it and succeed (a disk that fills, a
 * file-size limit): the rest is written again, which then fails with the reason. A turn's batch is
 * many lines: taking a short write for done would let the requests of the lines left out go on.
 */
function writeWhole(fd: number, text: string): void {
  const bytes = Buffer.from(text);
  let done = 0;
  while (done < bytes.length) {
    const n = writeSync(fd, bytes, done, bytes.length - done);
    if (n === 0) throw Object.assign(new Error('audit log write made no progress'), { code: 'EIO' });
    done += n;
  }
}

/**
 * Where a log's lines are written: a file open for appending (`AppendOnlyFile`), or one rotated by
 * size (`RotatingAuditFile`, audit-files.ts).
 */
export interface AuditFile {
  /** Appends the lines whole and in order, or throws. */
  append(lines: readonly string[]): void;
  /** Flushes what was appended to the disk (a host crash then loses none of it). */
  sync(): void;
  close(): void;
}

/** A file open for appending, never rotated (`carapace run --audit FILE`'s). */
export class AppendOnlyFile implements AuditFile {
  constructor(private readonly fd: number) {}
  append(lines: readonly string[]): void {
    writeWhole(this.fd, lines.join(''));
  }
  sync(): void {
    fdatasyncSync(this.fd);
  }
  close(): void {
    closeSync(this.fd);
  }
}

export class JsonlAuditLog implements AuditSink {
  private file: AuditFile | null;
  private readonly listeners = new Set<(e: OcsfEvent) => void>();
  /** Lines of emitAhead waiting for this turn's write, and who waits for them. */
  private queued: string[] = [];
  private waiting: { resolve: () => void; reject: (err: unknown) => void }[] = [];
  private flushScheduled = false;

  /**
   * `file`: the file already open for appending (the caller resolved `path` its own way), as a
   * descriptor or as an AuditFile (a rotated one); without it, `path` is opened for appending.
   */
  constructor(
    readonly path: string,
    file?: number | AuditFile,
  ) {
    if (typeof file === 'object') {
      this.file = file;
      return;
    }
    if (file === undefined) {
      mkdirSync(dirname(path), { recursive: true });
      file = openSync(path, 'a', 0o600);
    }
    this.file = new AppendOnlyFile(file);
  }

  emit(event: OcsfEvent): void {
    this.writeQueued(); // lines stay in the order they were emitted
    this.file?.append([jsonLine(event)]);
    for (const l of this.listeners) l(event);
  }

  /**
   * One write per turn for the events of many requests (an allowed L7 request's line was ~20% of
   * the proxy's work when each had a write(2) of its own), written at the end of this turn's I/O
   * (setImmediate) and before anything waiting for them goes on.
   */
  emitAhead(event: OcsfEvent): Promise<void> {
    const done = new Promise<void>((resolve, reject) => this.waiting.push({ resolve, reject }));
    this.queued.push(jsonLine(event));
    for (const l of this.listeners) l(event);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.writeQueued());
    }
    return done;
  }

  /** Writes the lines emitAhead queued this turn (readers of the file then see every line emitted). */
  writeQueued(): void {
    this.flushScheduled = false;
    if (this.queued.length === 0) return;
    const lines = this.queued;
    const waiting = this.waiting;
    this.queued = [];
    this.waiting = [];
    try {
      this.file?.append(lines);
    } catch (err) {
      for (const w of waiting) w.reject(err);
      return;
    }
    for (const w of waiting) w.resolve();
  }

  /** Flushes what was appended to the disk (fdatasync): a host crash then loses none of it. */
  sync(): void {
    this.writeQueued();
    this.file?.sync();
  }

  subscribe(listener: (e: OcsfEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  close(): void {
    this.writeQueued();
    this.file?.close();
    this.file = null;
  }
}

/** Keeps events in memory: for `carapace run` without --audit, where events still reach stderr summaries. */
export class MemoryAuditLog implements AuditSink {
  readonly events: OcsfEvent[] = [];
  emit(event: OcsfEvent): void {
    this.events.push(event);
  }
}

/** Sends each event to several sinks. */
export class FanoutAuditSink implements AuditSink {
  constructor(private readonly sinks: AuditSink[]) {}
  emit(event: OcsfEvent): void {
    for (const s of this.sinks) s.emit(event);
  }
  async emitAhead(event: OcsfEvent): Promise<void> {
    await Promise.all(this.sinks.map((s) => emitAhead(s, event)));
  }
}
