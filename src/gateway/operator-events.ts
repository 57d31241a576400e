/**
 * The operator's live feed, for `carapace term` (`GET /v1/events`, JSON lines on the API socket)
 * and the web dashboard (server-sent events): decisions as the proxy makes them, proposals as they
 * open, grow and are decided, and a nudge when a sandbox's lifecycle or policy changed. One reader
 * of the audit stream and of the proposals, many clients; and the per-sandbox series of requests
 * and denials the dashboard charts.
 *
 * A slow client never slows the proxy: an event is written only while the client's buffer holds
 * less than MAX_BUFFERED; beyond that, events are dropped for that client and counted, and the
 * count is sent (`{"type":"dropped"}`) once it drains. Each client sees only its owner's sandboxes
 * (an admin's: every sandbox).
 */
import type { OcsfEvent } from '../audit/index.js';
import type { Caller } from './api/router.js';
import type { AuditRouter } from './audit-router.js';
import { redactPath } from './proposals/proposal-rules.js';
import type { ProposalView } from './proposals/proposal-views.js';
import type { ProposalService } from './proposals/proposals.js';
import type { SandboxStore } from './store/sandbox-store.js';

const MAX_BUFFERED = 1 << 20;
/** Series: buckets of BUCKET_MS, SERIES_BUCKETS kept (30 minutes). */
export const BUCKET_MS = 10_000;
export const SERIES_BUCKETS = 180;

export type OperatorEvent =
  | {
      type: 'decision';
      sandbox: string;
      owner: number;
      t: number;
      allowed: boolean;
      level: 'connect' | 'request';
      host: string;
      port: number;
      method?: string | undefined;
      path?: string | undefined;
      binary: string;
      reason: string;
    }
  | { type: 'proposal'; proposal: ProposalView }
  | { type: 'sandbox'; sandbox: string; owner: number; what: string }
  | { type: 'dropped'; count: number };

/** Where a client's events go: a write that says whether the buffer has room (as a stream's). */
export interface EventSink {
  write(e: OperatorEvent): boolean;
  readonly buffered: number;
  /** Ends the client's stream (the gateway stops): its connection is closed, not left idle. */
  end(): void;
}

interface Client {
  caller: Caller;
  sink: EventSink;
  dropped: number;
}

/** Requests and denials of one sandbox per bucket. */
interface Series {
  start: number;
  requests: number[];
  denials: number[];
}

export class OperatorEvents {
  private readonly clients = new Set<Client>();
  private readonly owners = new Map<string, { name: string; owner: number } | null>();
  private readonly series = new Map<string, Series>();
  private readonly unsubscribe: (() => void)[] = [];

  constructor(
    private readonly opts: { audit: AuditRouter; proposals: ProposalService; store: SandboxStore },
  ) {
    this.unsubscribe.push(
      opts.audit.subscribe((id, e) => this.onAudit(id, e)),
      opts.proposals.subscribe((p) => this.send(p.owner, { type: 'proposal', proposal: p })),
    );
  }

  close(): void {
    for (const u of this.unsubscribe) u();
    for (const c of this.clients) c.sink.end();
    this.clients.clear();
  }

  /** A client: events for `caller` go to `sink` until the returned function is called. */
  attach(caller: Caller, sink: EventSink): () => void {
    const c: Client = { caller, sink, dropped: 0 };
    this.clients.add(c);
    return () => this.clients.delete(c);
  }

  /** Requests and denials per bucket for the caller's sandboxes (by name), oldest first. */
  seriesFor(caller: Caller): {
    bucketMs: number;
    start: number;
    sandboxes: { name: string; owner: number; requests: number[]; denials: number[] }[];
  } {
    const now = bucketOf(Date.now());
    const start = now - (SERIES_BUCKETS - 1) * BUCKET_MS;
    const out = [];
    for (const [id, s] of this.series) {
      const who = this.whoIs(id);
      if (!who || (who.owner !== caller.uid && !caller.admin)) continue;
      this.advance(s, now);
      out.push({ name: who.name, owner: who.owner, requests: [...s.requests], denials: [...s.denials] });
    }
    return { bucketMs: BUCKET_MS, start, sandboxes: out };
  }

  private onAudit(id: string, e: OcsfEvent): void {
    const who = this.whoIs(id);
    if (!who) {
      this.series.delete(id); // a deleted sandbox's last events
      return;
    }
    if (e.class_uid === 6002 || e.class_uid === 5019) {
      this.owners.delete(id); // a rename or a deletion shows at the next event
      this.send(who.owner, { type: 'sandbox', sandbox: who.name, owner: who.owner, what: e.message });
      return;
    }
    const d = decisionOf(e);
    if (!d) return;
    this.count(id, d.allowed);
    this.send(who.owner, { type: 'decision', sandbox: who.name, owner: who.owner, t: e.time, ...d });
  }

  private count(id: string, allowed: boolean): void {
    const now = bucketOf(Date.now());
    let s = this.series.get(id);
    if (!s) {
      s = {
        start: now - (SERIES_BUCKETS - 1) * BUCKET_MS,
        requests: new Array<number>(SERIES_BUCKETS).fill(0),
        denials: new Array<number>(SERIES_BUCKETS).fill(0),
      };
      this.series.set(id, s);
    }
    this.advance(s, now);
    s.requests[SERIES_BUCKETS - 1]!++;
    if (!allowed) s.denials[SERIES_BUCKETS - 1]!++;
  }

  /** Shifts a series so that its last bucket is `now`'s. */
  private advance(s: Series, now: number): void {
    const shift = Math.min(
      SERIES_BUCKETS,
      Math.round((now - (SERIES_BUCKETS - 1) * BUCKET_MS - s.start) / BUCKET_MS),
    );
    if (shift <= 0) return;
    s.requests.splice(0, shift);
    s.denials.splice(0, shift);
    for (let i = 0; i < shift; i++) {
      s.requests.push(0);
      s.denials.push(0);
    }
    s.start = now - (SERIES_BUCKETS - 1) * BUCKET_MS;
  }

  private whoIs(id: string): { name: string; owner: number } | null {
    let who = this.owners.get(id);
    if (who === undefined) {
      const rec = this.opts.store.get(id);
      who = rec ? { name: rec.name, owner: rec.ownerUid } : null;
      if (rec) this.owners.set(id, who);
    }
    return who;
  }

  private send(owner: number, e: OperatorEvent): void {
    for (const c of this.clients) {
      if (c.caller.uid !== owner && !c.caller.admin) continue;
      if (c.sink.buffered > MAX_BUFFERED) {
        c.dropped++;
        continue;
      }
      if (c.dropped > 0) {
        c.sink.write({ type: 'dropped', count: c.dropped });
        c.dropped = 0;
      }
      c.sink.write(e);
    }
  }
}

function bucketOf(t: number): number {
  return Math.floor(t / BUCKET_MS) * BUCKET_MS;
}

/** A proxy decision in an audit event (4001 open or refuse, 4002), or null. */
function decisionOf(
  e: OcsfEvent,
): Omit<Extract<OperatorEvent, { type: 'decision' }>, 'type' | 'sandbox' | 'owner' | 't'> | null {
  const allowed = e.disposition_id !== 2;
  const actor = e.actor as { process?: { file?: { path?: string } } } | undefined;
  const binary = actor?.process?.file?.path ?? '';
  const reason = typeof e.unmapped.reason === 'string' ? e.unmapped.reason : '';
  if (e.class_uid === 4001 && (e.activity_id === 1 || e.activity_id === 5)) {
    const dst = e.dst_endpoint as { hostname?: string; port?: number } | undefined;
    if (!dst?.hostname) return null;
    return { allowed, level: 'connect', host: dst.hostname, port: dst.port ?? 0, binary, reason };
  }
  if (e.class_uid === 4002) {
    const req = e.http_request as
      { http_method?: string; url?: { hostname?: string; port?: number; path?: string } } | undefined;
    if (!req?.url?.hostname) return null;
    return {
      allowed,
      level: 'request',
      host: req.url.hostname,
      port: req.url.port ?? 0,
      method: req.http_method,
      path: req.url.path === undefined ? undefined : redactPath(req.url.path),
      binary,
      reason,
    };
  }
  return null;
}
