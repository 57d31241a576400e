/**
 * `sandbox logs`: a sandbox's agent output (JSON lines `{"t","s","d"|"b"}`, kept per sandbox in
 * `<state>/logs/<id>.log` and one rotated generation `.1`, surviving restarts of the sandbox) and
 * its audit trail (`<state>/audit/<id>.jsonl` and its rotated generations `.1` … , oldest first:
 * AuditRouter.history), filtered, as JSON lines; with `follow`, what is appended afterwards too,
 * until the client goes away.
 */
import {
  closeSync,
  constants,
  createReadStream,
  existsSync,
  fstatSync,
  openSync,
  statSync,
  watch,
} from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createInterface } from 'node:readline';
import type { OcsfEvent } from '../../audit/index.js';
import type { AuditRouter } from '../audit-router.js';
import type { SandboxRecord } from '../store/sandbox-store.js';
import { lastLines, type SizedFile } from './last-lines.js';

export interface LogQuery {
  follow?: 'true' | 'false' | undefined;
  tail?: number | undefined;
  since?: number | undefined;
  audit?: 'true' | 'false' | undefined;
  type?: 'denied' | 'allowed' | 'lifecycle' | 'all' | undefined;
  host?: string | undefined;
}

/** One line of agent output as the log keeps it. */
export interface LogLine {
  t: number;
  s: 'out' | 'err';
  d?: string;
  b?: string;
}

export class LogService {
  constructor(
    private readonly logPath: (id: string) => string,
    private readonly audit: AuditRouter,
  ) {}

  async stream(rec: SandboxRecord, q: LogQuery, req: IncomingMessage, res: ServerResponse): Promise<void> {
    res.writeHead(200, { 'Content-Type': 'application/x-ndjson', 'Cache-Control': 'no-store' });
    const audit = q.audit === 'true';
    const keep = audit ? auditFilter(q) : (line: LogLine) => q.since === undefined || line.t >= q.since;
    // The audit's files and the live events are taken in one turn: every line once, none missed
    // by a rotation or a write between reading the files and following.
    let live: string[] | null = [];
    const stopAudit =
      audit && q.follow === 'true'
        ? this.audit.subscribe((id, e) => {
            if (id !== rec.id || !keep(e as LogLine & OcsfEvent)) return;
            const text = JSON.stringify(e) + '\n';
            if (live) live.push(text);
            else res.write(text);
          })
        : null;
    try {
      const kept = await this.lastLines(rec, audit, keep, q.tail);
      if (kept.length) res.write(kept.join('\n') + '\n');
      if (q.follow !== 'true') {
        res.end();
        return;
      }
      if (live.length) res.write(live.join(''));
      live = null;
      const stopFile = audit
        ? null
        : followFile(this.logPath(rec.id), (text) => {
            const parsed = parseLine(text);
            if (parsed !== null && keep(parsed as LogLine & OcsfEvent)) res.write(text + '\n');
          });
      await new Promise<void>((resolve) => {
        req.on('close', resolve);
        res.on('close', resolve);
      });
      stopFile?.();
    } finally {
      stopAudit?.();
    }
  }

  /** The last `tail` lines `keep` keeps of what is there now (the agent's log, or the audit's files). */
  private async lastLines(
    rec: SandboxRecord,
    audit: boolean,
    keep: (line: LogLine & OcsfEvent) => boolean,
    tail: number | undefined,
  ): Promise<string[]> {
    const inputs = audit
      ? this.audit.history(rec.id)
      : [`${this.logPath(rec.id)}.1`, this.logPath(rec.id)].filter((file) => existsSync(file));
    if (tail !== undefined) return tailOf(inputs, (text) => keepText(text, keep), tail);
    const kept: string[] = [];
    let next = 0;
    try {
      for (; next < inputs.length; next++) {
        const file = inputs[next]!;
        if (typeof file !== 'string' && file.size === 0) continue;
        // A descriptor is read up to the size it had when taken: what came after is followed live.
        const input =
          typeof file === 'string'
            ? createReadStream(file)
            : createReadStream('', { fd: file.fd, start: 0, end: file.size - 1, autoClose: true });
        for await (const text of createInterface({ input, crlfDelay: Infinity })) {
          const parsed = parseLine(text);
          if (parsed === null || !keep(parsed as LogLine & OcsfEvent)) continue;
          kept.push(text);
          if (tail !== undefined && kept.length > tail) kept.shift();
        }
      }
    } finally {
      // A stream closes its descriptor; those of empty files and of files not reached are closed here.
      for (const [i, file] of inputs.entries()) {
        if (typeof file !== 'string' && (file.size === 0 || i > next)) closeSync(file.fd);
      }
    }
    return kept;
  }
}

function keepText(text: string, keep: (line: LogLine & OcsfEvent) => boolean): boolean {
  const parsed = parseLine(text);
  return parsed !== null && keep(parsed as LogLine & OcsfEvent);
}

/** `--tail`: read from the end (last-lines.ts); every descriptor is closed after. */
async function tailOf(
  inputs: readonly (string | SizedFile)[],
  keep: (text: string) => boolean,
  tail: number,
): Promise<string[]> {
  const files: SizedFile[] = [];
  try {
    for (const input of inputs) {
      if (typeof input !== 'string') {
        files.push(input);
        continue;
      }
      let fd: number;
      try {
        fd = openSync(input, constants.O_RDONLY | constants.O_NOFOLLOW);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue; // rotated away since
        throw err;
      }
      files.push({ fd, size: fstatSync(fd).size });
    }
    return await lastLines(files, keep, tail);
  } finally {
    for (const f of files) closeSync(f.fd);
  }
}

function parseLine(text: string): Record<string, unknown> | null {
  try {
    const v = JSON.parse(text) as unknown;
    return typeof v === 'object' && v !== null ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

function auditFilter(q: LogQuery): (e: OcsfEvent) => boolean {
  return (e) => {
    if (q.since !== undefined && e.time < q.since) return false;
    const host = (e.dst_endpoint as { hostname?: string } | undefined)?.hostname;
    if (q.host !== undefined && host !== q.host) return false;
    switch (q.type ?? 'all') {
      case 'denied':
        return e.disposition_id === 2 || e.status_id === 2;
      case 'allowed':
        return e.disposition_id === 1 || e.disposition_id === 17;
      case 'lifecycle':
        return e.class_uid === 6002;
      default:
        return true;
    }
  };
}

/**
 * Calls `onLine` for every complete line appended to `path` from now on (a rotation, which makes
 * the file shorter, starts again from its beginning). Returns the function that stops it.
 */
function followFile(path: string, onLine: (text: string) => void): () => void {
  let offset = existsSync(path) ? statSync(path).size : 0;
  let partial = '';
  let reading = false;
  let again = false;
  const read = () => {
    if (reading) {
      again = true;
      return;
    }
    reading = true;
    let size: number;
    try {
      size = statSync(path).size;
    } catch {
      reading = false;
      return;
    }
    if (size < offset) offset = 0;
    if (size === offset) {
      reading = false;
      return;
    }
    const stream = createReadStream(path, { start: offset, end: size - 1 });
    offset = size;
    stream.on('data', (chunk) => {
      partial += String(chunk);
      let nl: number;
      while ((nl = partial.indexOf('\n')) >= 0) {
        onLine(partial.slice(0, nl));
        partial = partial.slice(nl + 1);
      }
    });
    stream.on('close', () => {
      reading = false;
      if (again) {
        again = false;
        read();
      }
    });
  };
  const watcher = watch(path.slice(0, path.lastIndexOf('/')), (_e, file) => {
    if (file !== null && path.endsWith(`/${file}`)) read();
  });
  watcher.on('error', () => {});
  return () => watcher.close();
}
