/**
 * `sandbox logs`: a sandbox's agent output (JSON lines `{"t","s","d"|"b"}`, kept per sandbox in
 * `<state>/logs/<id>.log` and its rotated generations `.1` …, oldest first: agent-log.ts, surviving
 * restarts of the sandbox) and its audit trail (`<state>/audit/<id>.jsonl` and its rotated
 * generations `.1` … , oldest first: AuditRouter.history), filtered, as JSON lines; with `follow`,
 * what is appended afterwards too, across rotations, until the client goes away.
 */
import { closeSync, createReadStream, fstatSync, read, watch } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createInterface } from 'node:readline';
import { StringDecoder } from 'node:string_decoder';
import type { OcsfEvent } from '../../audit/index.js';
import type { AuditRouter } from '../audit-router.js';
import type { AgentLogs } from './agent-log.js';
import type { SandboxRecord } from '../store/sandbox-store.js';
import { lastLines } from './last-lines.js';
import { cutLines, LineWeigher } from './output-lines.js';

export interface LogQuery {
  follow?: 'true' | 'false' | undefined;
  tail?: number | undefined;
  /** With `tail`, of the agent's output: N lines of output, not N records (output-lines.ts). */
  lines?: 'true' | 'false' | undefined;
  since?: number | undefined;
  audit?: 'true' | 'false' | undefined;
  type?: 'denied' | 'allowed' | 'lifecycle' | 'all' | undefined;
  host?: string | undefined;
}

/** One line of agent output as the log keeps it. */
export interface LogLine {
  t: number;
  s: 'out' | 'err' | 'init';
  d?: string;
  b?: string;
}

export class LogService {
  constructor(
    private readonly logs: AgentLogs,
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
    // The agent's current file is kept open when following: the follower goes on from where the
    // reading ended, in that file, and from there into the next one after a rotation.
    let current: { fd: number; size: number } | null = null;
    try {
      const kept = await this.lastLines(
        rec,
        audit,
        keep,
        q.tail,
        q.follow === 'true',
        (c) => (current = c),
        !audit && q.lines === 'true',
      );
      if (kept.length) res.write(kept.join('\n') + '\n');
      if (q.follow !== 'true') {
        res.end();
        return;
      }
      if (live.length) res.write(live.join(''));
      live = null;
      const stopFile = audit
        ? null
        : followAgentLog(this.logs, rec.id, current, (text) => {
            const parsed = parseLine(text);
            if (parsed !== null && keep(parsed as LogLine & OcsfEvent)) res.write(text + '\n');
          });
      current = null; // the follower's now
      await new Promise<void>((resolve) => {
        req.on('close', resolve);
        res.on('close', resolve);
      });
      stopFile?.();
    } finally {
      stopAudit?.();
      if (current !== null) closeSync((current as { fd: number }).fd);
    }
  }

  /** The last `tail` lines `keep` keeps of what is there now (the agent's log, or the audit's files). */
  private async lastLines(
    rec: SandboxRecord,
    audit: boolean,
    keep: (line: LogLine & OcsfEvent) => boolean,
    tail: number | undefined,
    follow: boolean,
    keepCurrent: (file: { fd: number; size: number }) => void,
    byLines = false,
  ): Promise<string[]> {
    const agent = audit ? null : this.logs.openAll(rec.id);
    const inputs: { fd: number; size: number }[] = agent ?? this.audit.history(rec.id);
    // The agent's current file (the last, when it is there) stays open for the follower.
    const last = agent?.at(-1);
    const held = follow && last?.name === this.logs.base(rec.id) ? last : null;
    if (tail !== undefined) {
      // Read from the end backwards (last-lines.ts): the cost is what is shown, not the history.
      try {
        if (!byLines) return await lastLines(inputs, (text) => keepText(text, keep), tail);
        return await lastOutputLines(inputs, keep, tail);
      } finally {
        for (const file of inputs) if (file !== held) closeSync(file.fd);
        if (held) keepCurrent(held);
      }
    }
    const kept: string[] = [];
    let next = 0;
    try {
      for (; next < inputs.length; next++) {
        const file = inputs[next]!;
        if (file.size === 0) continue;
        // A descriptor is read up to the size it had when taken: what came after is followed live.
        const input = createReadStream('', {
          fd: file.fd,
          start: 0,
          end: file.size - 1,
          autoClose: file !== held,
        });
        for await (const text of createInterface({ input, crlfDelay: Infinity })) {
          const parsed = parseLine(text);
          if (parsed === null || !keep(parsed as LogLine & OcsfEvent)) continue;
          kept.push(text);
        }
      }
    } finally {
      // A stream closes its descriptor; those of empty files and of files not reached are closed here.
      for (const [i, file] of inputs.entries()) {
        if (file !== held && (file.size === 0 || i > next)) closeSync(file.fd);
      }
    }
    if (held) keepCurrent(held);
    return kept;
  }
}

/** The records holding the last `tail` lines of output, the oldest cut where the first begins. */
async function lastOutputLines(
  inputs: { fd: number; size: number }[],
  keep: (line: LogLine & OcsfEvent) => boolean,
  tail: number,
): Promise<string[]> {
  const weigher = new LineWeigher();
  let weight = 0;
  const texts = await lastLines(
    inputs,
    (text) => {
      const parsed = parseLine(text);
      if (parsed === null || !keep(parsed as LogLine & OcsfEvent)) return false;
      const w = weigher.weigh(parsed as unknown as LogLine);
      weight += w;
      return w;
    },
    tail,
  );
  if (weight < tail || texts.length === 0) return texts; // all there is
  const oldest = cutLines(JSON.parse(texts[0]!) as LogLine, weight - tail);
  return oldest ? [JSON.stringify(oldest), ...texts.slice(1)] : texts.slice(1);
}

function keepText(text: string, keep: (line: LogLine & OcsfEvent) => boolean): boolean {
  const parsed = parseLine(text);
  return parsed !== null && keep(parsed as LogLine & OcsfEvent);
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
 * Calls `onLine` for every complete line the agent's log gets from now on: from `from` (its current
 * file, open, and how much of it was read), and across rotations (agent-log.ts). The file is read
 * to its end when the directory says something of the log changed; when the name has gone to a new
 * file, the old one is read to its end once the new one has a line (the init writes the old one
 * until it switches, and the new one only after), then the new one from its start. Every name is
 * opened through the directory's descriptor, never through a symlink. Returns the stop function.
 */
function followAgentLog(
  logs: AgentLogs,
  id: string,
  from: { fd: number; size: number } | null,
  onLine: (text: string) => void,
): () => void {
  const base = logs.base(id);
  let fd = from?.fd ?? null;
  let offset = from?.size ?? 0;
  let partial = '';
  // A character cut by the end of a read is kept for the next: the lines hold raw UTF-8.
  let decoder = new StringDecoder('utf8');
  let stopped = false;
  let reading: Promise<void> | null = null;
  let again = false;
  const buf = Buffer.allocUnsafe(64 * 1024);
  const readToEnd = async (): Promise<void> => {
    if (fd === null) return;
    const held = fd;
    for (;;) {
      const n = await new Promise<number>((resolve) =>
        read(held, buf, 0, buf.length, offset, (err, bytes) => resolve(err ? 0 : bytes)),
      );
      if (n === 0 || stopped) return;
      offset += n;
      partial += decoder.write(buf.subarray(0, n));
      let nl: number;
      while ((nl = partial.indexOf('\n')) >= 0) {
        onLine(partial.slice(0, nl));
        partial = partial.slice(nl + 1);
      }
    }
  };
  /** The current name's file when it is not the one held and already has a line; else null. */
  const successor = (): { fd: number; size: number } | null => {
    const now = logs.dir.openForReading(base);
    if (!now) return null;
    const same =
      fd !== null &&
      (() => {
        const a = fstatSync(fd, { bigint: true });
        const b = fstatSync(now.fd, { bigint: true });
        return a.dev === b.dev && a.ino === b.ino;
      })();
    if (same || (fd !== null && now.size === 0)) {
      closeSync(now.fd);
      return null;
    }
    return now;
  };
  const update = (): void => {
    if (reading) {
      again = true;
      return;
    }
    reading = drain().finally(() => (reading = null));
  };
  const drain = async (): Promise<void> => {
    do {
      again = false;
      await readToEnd();
      const next = stopped ? null : successor();
      if (next) {
        await readToEnd(); // what the init wrote to the old file before it switched
        if (fd !== null) closeSync(fd);
        fd = next.fd;
        offset = 0;
        partial = '';
        decoder = new StringDecoder('utf8');
        again = true;
      }
    } while (again && !stopped);
  };
  const watcher = watch(logs.dir.path, (_e, file) => {
    if (file !== null && (file === base || file.startsWith(`${base}.`))) update();
  });
  watcher.on('error', () => {});
  update(); // what came between the reading and the watch
  return () => {
    stopped = true;
    watcher.close();
    // A read in progress holds the descriptor until it returns.
    void (reading ?? Promise.resolve()).then(() => {
      if (fd !== null) closeSync(fd);
      fd = null;
    });
  };
}
