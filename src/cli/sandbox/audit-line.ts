/**
 * One audit event (OCSF, src/audit/ocsf.ts) as one line a person reads at a terminal:
 * `TIME  CLASS ACTIVITY  OUTCOME  TARGET  REASON`. Scripts get the raw JSON lines (`-o json`, or
 * stdout not a terminal). A sandbox chooses part of an event (the host it asked for, an HTTP path,
 * a reason that quotes them): every field is escaped (src/policy/printable.ts), so nothing it
 * planted moves the cursor, recolours the terminal or breaks the line.
 */
import { printable } from '../../policy/printable.js';

type Event = Record<string, unknown>;

const CLASSES: Record<number, { name: string; activities?: Record<number, string> }> = {
  4001: { name: 'network', activities: { 1: 'open', 2: 'close', 5: 'refuse' } },
  4002: { name: 'http' },
  2004: { name: 'finding' },
  6002: { name: 'lifecycle', activities: { 3: 'start', 4: 'stop', 8: 'update', 99: 'lost' } },
  5019: { name: 'policy', activities: { 1: 'apply', 99: 'refuse' } },
  6003: { name: 'inference' },
};

const record = (v: unknown): Event => (typeof v === 'object' && v !== null ? (v as Event) : {});
const text = (v: unknown): string | undefined =>
  typeof v === 'string' ? v : typeof v === 'number' ? String(v) : undefined;

/** `network refuse`, `http POST`, `finding sni-mismatch`, `lifecycle start`, …. */
function kindOf(ev: Event): string {
  const uid = Number(ev.class_uid);
  const activity = Number(ev.activity_id);
  const known = CLASSES[uid];
  if (known === undefined) return `class ${text(ev.class_uid) ?? '?'}/${text(ev.activity_id) ?? '?'}`;
  const what =
    uid === 4002
      ? text(record(ev.http_request).http_method)
      : uid === 2004
        ? text(record(ev.finding_info).uid)
        : uid === 6003
          ? text(record(ev.api).operation)
          : known.activities?.[activity];
  return `${known.name} ${what ?? String(activity)}`;
}

function outcomeOf(ev: Event): string {
  const d = ev.disposition_id;
  if (d === 1) return 'allowed';
  if (d === 2) return 'refused';
  if (d === 17) return 'logged';
  return ev.status_id === 2 ? 'refused' : '-';
}

/** host:port (and the path, for an HTTP request), or `-`. */
function targetOf(ev: Event): string {
  const url = record(record(ev.http_request).url);
  const dst = record(ev.dst_endpoint);
  const host = text(url.hostname) ?? text(dst.hostname);
  if (host === undefined) return '-';
  const port = text(url.port) ?? text(dst.port);
  return `${host}${port !== undefined ? `:${port}` : ''}${text(url.path) ?? ''}`;
}

export function auditLine(ev: Event): string {
  const time = typeof ev.time === 'number' ? new Date(ev.time).toISOString() : '-';
  const reason = text(record(ev.unmapped).reason) ?? text(ev.message) ?? '';
  return [
    time,
    printable(kindOf(ev)).padEnd(16),
    outcomeOf(ev).padEnd(7),
    printable(targetOf(ev)),
    printable(reason),
  ].join('  ');
}
