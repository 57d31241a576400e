/**
 * Where audit events go: JSON lines appended to a file (and, for the gateway later, to live
 * subscribers). Writes are synchronous appends so a line is on disk before the decision it records
 * takes effect for the caller; a crash never loses an acknowledged refusal.
 */
import { closeSync, fdatasyncSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import type { OcsfEvent } from './ocsf.js';

export interface AuditSink {
  emit(event: OcsfEvent): void;
}

/**
 * One event as one line of JSON. JSON.stringify escapes C0 controls only; DEL, the C1 controls and
 * Unicode's invisible and bidirectional format characters would reach a terminal that shows the
 * file (`tail -f`, `less`) raw, and a sandbox chooses some of these strings (its executables'
 * names). They are written as `\uXXXX` escapes: the same JSON value, nothing a terminal acts on
 * (they only occur inside strings: JSON's own syntax is ASCII).
 */
const TERMINAL_UNSAFE =
  /[\u007f-\u009f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ufff9-\ufffb]/g;

function jsonLine(event: OcsfEvent): string {
  const json = JSON.stringify(event);
  TERMINAL_UNSAFE.lastIndex = 0;
  if (!TERMINAL_UNSAFE.test(json)) return json + '\n';
  return json.replace(TERMINAL_UNSAFE, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`) + '\n';
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
    if (this.fd !== null) writeSync(this.fd, jsonLine(event));
    for (const l of this.listeners) l(event);
  }

  /** Flushes what was appended to the disk (fdatasync): a host crash then loses none of it. */
  sync(): void {
    if (this.fd !== null) fdatasyncSync(this.fd);
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
