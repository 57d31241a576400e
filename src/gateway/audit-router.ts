/**
 * The gateway's audit trail: one OCSF JSON-lines file per sandbox, `<state>/audit/<id>.jsonl`, in
 * the gateway's own state directory (never in a tree a sandbox can write). Events from the shared
 * proxy and from the gateway carry the sandbox's id; each goes to that sandbox's file, appended
 * synchronously (a refusal is on disk before the caller learns of it). Live readers (`logs -f`)
 * subscribe; a slow reader never holds a write up.
 */
import { constants, mkdirSync, openSync } from 'node:fs';
import { join } from 'node:path';
import { JsonlAuditLog, type AuditSink, type OcsfEvent } from '../audit/index.js';

export class AuditRouter implements AuditSink {
  private readonly logs = new Map<string, JsonlAuditLog & { id: string }>();
  private readonly listeners = new Set<(id: string, e: OcsfEvent) => void>();
  /** Logs written since the last flush to disk. */
  private readonly dirty = new Set<JsonlAuditLog>();
  private readonly flusher: NodeJS.Timeout;

  /**
   * Durability: every line is appended (write(2)) before the decision it records takes effect, so
   * a gateway killed at any moment loses none; what is appended is flushed to the disk (fdatasync)
   * within `flushMs`, so a host that crashes loses at most that last stretch.
   */
  constructor(
    private readonly dir: string,
    flushMs = 1_000,
  ) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    this.flusher = setInterval(() => this.flush(), flushMs);
    this.flusher.unref();
  }

  /** Flushes every log written since the last time. */
  flush(): void {
    for (const log of this.dirty) log.sync();
    this.dirty.clear();
  }

  pathOf(id: string): string {
    return join(this.dir, `${id}.jsonl`);
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
  private logOf(event: OcsfEvent): (JsonlAuditLog & { id: string }) | null {
    const id = event.unmapped.sandbox;
    if (typeof id !== 'string' || !/^[a-z0-9][a-z0-9_.-]*$/.test(id)) return null;
    let log = this.logs.get(id);
    if (!log) {
      // Our own directory (0700): no sandbox can have planted anything here.
      const fd = openSync(
        this.pathOf(id),
        constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW,
        0o600,
      );
      log = Object.assign(new JsonlAuditLog(this.pathOf(id), fd), { id });
      this.logs.set(id, log);
    }
    return log;
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
    if (id === undefined) clearInterval(this.flusher);
    for (const [key, log] of this.logs) {
      if (id !== undefined && key !== id) continue;
      if (this.dirty.delete(log)) log.sync();
      log.close();
      this.logs.delete(key);
    }
  }
}
