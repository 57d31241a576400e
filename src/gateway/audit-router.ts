/**
 * The gateway's audit trail: one OCSF JSON-lines file per sandbox, `<state>/audit/<id>.jsonl`, in
 * the gateway's own state directory (never in a tree a sandbox can write). Events from the shared
 * proxy and from the gateway carry the sandbox's id; each goes to that sandbox's file, appended
 * synchronously (a refusal is on disk before the caller learns of it). Live readers (`logs -f`)
 * subscribe; a slow reader never holds a write up.
 *
 * Each file is rotated by size (src/audit/audit-files.ts): `<id>.jsonl.1` … `.<files-1>` hold its
 * history, the sandbox's whole trail takes at most `maxFileBytes × files` of the disk, and dropping
 * the oldest generation is itself an event in that trail (2004 `audit-dropped`). `history` reads
 * across them all.
 */
import { join } from 'node:path';
import {
  AuditDirectory,
  DEFAULT_AUDIT_ROTATION,
  finding,
  generationNames,
  JsonlAuditLog,
  RotatingAuditFile,
  type AuditRotation,
  type AuditSink,
  type DroppedGeneration,
  type OcsfEvent,
} from '../audit/index.js';

export interface AuditRouterOptions {
  /** What is appended is flushed to the disk within this long (ms). */
  flushMs?: number;
  /** Size and number of each sandbox's audit files. */
  rotation?: AuditRotation;
}

/** A file of a sandbox's audit history, open for reading, and how much of it there was then. */
export interface AuditHistoryFile {
  fd: number;
  size: number;
}

export class AuditRouter implements AuditSink {
  private readonly logs = new Map<string, JsonlAuditLog & { id: string; rotating: RotatingAuditFile }>();
  private readonly listeners = new Set<(id: string, e: OcsfEvent) => void>();
  /** Logs written since the last flush to disk. */
  private readonly dirty = new Set<JsonlAuditLog>();
  private readonly flusher: NodeJS.Timeout;
  private readonly dir: AuditDirectory;
  readonly rotation: AuditRotation;

  /**
   * Durability: every line is appended (write(2)) before the decision it records takes effect, so
   * a gateway killed at any moment loses none; what is appended is flushed to the disk (fdatasync)
   * within `flushMs`, so a host that crashes loses at most that last stretch. A rotation keeps
   * both: lines are never split across files, and a file rotated away is flushed with the rest.
   */
  constructor(dir: string, opts: AuditRouterOptions = {}) {
    this.dir = new AuditDirectory(dir);
    this.rotation = opts.rotation ?? DEFAULT_AUDIT_ROTATION;
    this.flusher = setInterval(() => this.flush(), opts.flushMs ?? 1_000);
    this.flusher.unref();
  }

  /** Flushes every log written since the last time. */
  flush(): void {
    for (const log of this.dirty) log.sync();
    this.dirty.clear();
  }

  /** The sandbox's current audit file (its history: `history`). */
  pathOf(id: string): string {
    return join(this.dir.path, fileOf(id));
  }

  /**
   * The sandbox's audit history as it is now: its files oldest first, each open for reading (never
   * through a symlink), with its size now. Lines emitted before are in them (queued ones are
   * written first); a listener subscribed in the same turn gets exactly the lines after. The
   * caller closes the descriptors.
   */
  history(id: string): AuditHistoryFile[] {
    this.logs.get(id)?.writeQueued();
    const out: AuditHistoryFile[] = [];
    for (const name of generationNames(fileOf(id), this.rotation)) {
      const f = this.dir.openForReading(name);
      if (f) out.push(f);
    }
    return out;
  }

  /**
   * Resolves once every dropped generation is counted and its event written: a gateway that stops
   * waits for it, so that a drop is never left unsaid.
   */
  async dropsCounted(): Promise<void> {
    await Promise.all([...this.logs.values()].map((l) => l.rotating.dropsCounted()));
  }

  /** Closes the sandbox's file and removes it and its generations (the sandbox is deleted). */
  async remove(id: string): Promise<void> {
    this.close(id);
    await this.dir.remove(fileOf(id));
  }

  emit(event: OcsfEvent): void {
    const log = this.logOf(event);
    if (!log) return;
    log.emit(event);
    this.dirty.add(log);
    for (const l of this.listeners) l(log.id, event);
  }

  /** As emit, written with the other lines of this turn (see AuditSink.emitAhead). */
  emitAhead(event: OcsfEvent): Promise<void> {
    const log = this.logOf(event);
    if (!log) return Promise.resolve();
    const written = log.emitAhead(event);
    this.dirty.add(log);
    for (const l of this.listeners) l(log.id, event);
    return written;
  }

  /** The file of the event's sandbox, opened on its first event; null for an event of none. */
  private logOf(event: OcsfEvent): (JsonlAuditLog & { id: string; rotating: RotatingAuditFile }) | null {
    const id = event.unmapped.sandbox;
    if (typeof id !== 'string' || !/^[a-z0-9][a-z0-9_.-]*$/.test(id)) return null;
    let log = this.logs.get(id);
    if (!log) {
      // Our own directory (0700): no sandbox can have planted anything here; and nothing is
      // opened through a symlink even so (audit-files.ts).
      const file = new RotatingAuditFile(this.dir, fileOf(id), this.rotation, (d) => this.dropped(id, d));
      log = Object.assign(new JsonlAuditLog(this.pathOf(id), file), { id, rotating: file });
      this.logs.set(id, log);
    }
    return log;
  }

  /**
   * The oldest generation of a sandbox's audit is gone: said in its trail, so that whoever reads
   * it knows the history before is missing, and how much. Not for a sandbox deleted meanwhile
   * (its file would be made again) or a router closed.
   */
  private dropped(id: string, d: DroppedGeneration): void {
    if (!this.logs.has(id)) return;
    this.emit(
      finding({
        sandbox: id,
        kind: 'audit-dropped',
        severity: 'low',
        title: `audit: the oldest ${d.lines} lines (${d.bytes} bytes) were dropped, keeping ${this.rotation.files} files of at most ${this.rotation.maxFileBytes} bytes`,
        details: { ...d, max_file_bytes: this.rotation.maxFileBytes, files: this.rotation.files },
      }),
    );
  }

  /** Live events of every sandbox (callers filter). */
  subscribe(listener: (id: string, e: OcsfEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** A sandbox for this router: events emitted through it are tagged with its id. */
  forSandbox(id: string): AuditSink {
    const tagged = (e: OcsfEvent): OcsfEvent => ({ ...e, unmapped: { ...e.unmapped, sandbox: id } });
    return { emit: (e) => this.emit(tagged(e)), emitAhead: (e) => this.emitAhead(tagged(e)) };
  }

  /** Closes a sandbox's file (it is deleted, or the gateway stops). */
  close(id?: string): void {
    for (const [key, log] of this.logs) {
      if (id !== undefined && key !== id) continue;
      if (this.dirty.delete(log)) log.sync();
      log.close();
      this.logs.delete(key);
    }
    // The directory stays open: an event that comes after (a late end of a sandbox) still has
    // its file to go to, as it had before rotation.
    if (id === undefined) clearInterval(this.flusher);
  }
}

/** A sandbox's current audit file's name (`runs` for one-off runs: runs.jsonl). */
function fileOf(id: string): string {
  return `${id}.jsonl`;
}
