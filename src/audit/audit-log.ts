/**
 * Where audit events go: JSON lines appended to a file (and, for the gateway later, to live
 * subscribers). Writes are synchronous appends so a line is on disk before the decision it records
 * takes effect for the caller; a crash never loses an acknowledged refusal.
 */
import { closeSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import type { OcsfEvent } from './ocsf.js';

export interface AuditSink {
  emit(event: OcsfEvent): void;
}

export class JsonlAuditLog implements AuditSink {
  private fd: number | null;
  private readonly listeners = new Set<(e: OcsfEvent) => void>();

  /** `fd`: the file already open for appending (the caller resolved `path` its own way). */
  constructor(
    readonly path: string,
    fd?: number,
  ) {
    if (fd !== undefined) {
      this.fd = fd;
      return;
    }
    mkdirSync(dirname(path), { recursive: true });
    this.fd = openSync(path, 'a', 0o600);
  }

  emit(event: OcsfEvent): void {
    if (this.fd !== null) writeSync(this.fd, JSON.stringify(event) + '\n');
    for (const l of this.listeners) l(event);
  }

  subscribe(listener: (e: OcsfEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  close(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
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
}
