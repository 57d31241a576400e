/**
 * `sandbox logs`: a sandbox's agent output (JSON lines `{"t","s","d"|"b"}`, kept per sandbox in
 * `<state>/logs/<id>.log` and its rotated generations `.1` …, oldest first: agent-log.ts, surviving
 * restarts of the sandbox) and its audit trail (`<state>/audit/<id>.jsonl` and its rotated
 * generations `.1` … , oldest first: AuditRouter.history), filtered, as JSON lines; with `follow`,
 * what is appended afterwards too, across rotations, until the client goes away.
 */
import { closeSync, createReadStream } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createInterface } from 'node:readline';
import type { OcsfEvent } from '../../audit/index.js';
import type { AuditRouter } from '../audit-router.js';
import type { AgentLogs } from './agent-log.js';
import type { SandboxRecord } from '../store/sandbox-store.js';
import { followAgentLog } from './agent-log-follower.js';
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
