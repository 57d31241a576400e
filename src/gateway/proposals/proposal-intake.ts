/**
 * The intake of proposals (proposals.ts says what they are): from a policy denial in the audit
 * stream, or an agent's own submission through policy.local, to a stored proposal. Denials are
 * deduplicated per sandbox by host, port, binary and, for a request, method and path pattern
 * (proposal-rules.ts, proposalKey): a flood of one denial is one row whose hit count grows, with
 * the newest samples (redacted) and the revision it was last refused under.
 *
 * Cost on the proxy's path: the audit listener only queues the event; the queue is turned into
 * rows in one transaction a few milliseconds later, off the proxy's turn. Hits of a proposal
 * already stored wait longer (HITS_FLUSH_MS), so an agent retrying in a loop is a few writes a
 * second. Pending proposals per sandbox are capped (MAX_OPEN); beyond the cap new keys are counted
 * as dropped, never stored.
 */
import type { OcsfEvent } from '../../audit/index.js';
import type { PolicyGeneration } from '../../policy/index.js';
import { allowedBy, proposalKey, redactPath, type DenialFacts } from './proposal-rules.js';
import type { ProposalView } from './proposal-views.js';
import type { ProposalRecord, ProposalSample, ProposalStore } from '../store/proposal-store.js';
import type { SandboxRecord, SandboxStore } from '../store/sandbox-store.js';

/** Open proposals one sandbox may have; new keys beyond it are dropped (and counted). */
export const MAX_OPEN = 500;
/** How long a denial that may open a proposal waits in memory before it is stored. */
const FLUSH_MS = 5;
/**
 * How long more hits of a proposal already stored wait: an agent retrying in a loop is one
 * transaction (one fsync) per HITS_FLUSH_MS, not one per retry, so the store stays free for the
 * writes someone waits for (an approval's revision).
 */
const HITS_FLUSH_MS = 250;

interface Queued {
  sandboxId: string;
  facts: DenialFacts;
  t: number;
  source: 'denial' | 'agent';
  rationale?: string | undefined;
}

export interface ProposalIntakeOptions {
  proposals: ProposalStore;
  store: SandboxStore;
  /** The compiled latest revision of a sandbox (kept by the proposal service). */
  generationOf: (rec: SandboxRecord) => { gen: PolicyGeneration; rev: number };
  /** The proposals a flush stored or hit, as views, told to the live listeners. */
  published: (ids: ReadonlySet<number>) => ProposalView[];
}

export class ProposalIntake {
  private readonly queue: Queued[] = [];
  private timer: NodeJS.Timeout | null = null;
  private timerDue = 0;
  /** `sandbox|key` of proposals stored as open (pending or quiet) since the gateway started. */
  private readonly stored = new Set<string>();
  /** Denials not stored because their sandbox had MAX_OPEN open proposals. */
  dropped = 0;

  constructor(private readonly opts: ProposalIntakeOptions) {}

  /** Stops the timer and stores what is still queued. */
  close(): void {
    if (this.timer) clearTimeout(this.timer);
    this.flush();
  }

  /** A proposal was decided: its key's next denial opens a new one (stored at once, not batched). */
  forget(sandboxId: string, key: string): void {
    this.stored.delete(`${sandboxId}|${key}`);
  }

  /** A sandbox was deleted: what was kept for it goes too. */
  forgetSandbox(sandboxId: string): void {
    for (const k of this.stored) if (k.startsWith(`${sandboxId}|`)) this.stored.delete(k);
  }

  /** An audit event of the sandbox: queued if it is a policy denial. Runs on the proxy's turn. */
  onEvent(sandboxId: string, e: OcsfEvent): void {
    const facts = denialOf(e);
    if (!facts) return;
    this.enqueue({ sandboxId, facts, t: e.time, source: 'denial' });
  }

  private enqueue(q: Queued): void {
    this.queue.push(q);
    const wait = this.stored.has(`${q.sandboxId}|${proposalKey(q.facts)}`) ? HITS_FLUSH_MS : FLUSH_MS;
    const due = Date.now() + wait;
    if (this.timer !== null && this.timerDue <= due) return;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timerDue = due;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.flush();
    }, wait);
  }

  /**
   * An agent's own proposal (policy.local): what it wants and why. Refused when the policy
   * already allows it; otherwise stored (or merged into the open one) like a denial.
   */
  submit(sandboxId: string, facts: DenialFacts, rationale: string): ProposalView | null {
    const rec = this.opts.store.get(sandboxId);
    if (!rec) return null;
    const { gen } = this.opts.generationOf(rec);
    if (allowedBy(gen, facts)) return null;
    this.queue.push({ sandboxId, facts, t: Date.now(), source: 'agent', rationale });
    const changed = this.flush();
    return changed.find((p) => p.sandbox === rec.name && p.owner === rec.ownerUid) ?? null;
  }

  /** Stores what was queued, one transaction; tells the listeners (through `published`). */
  flush(): ProposalView[] {
    if (this.queue.length === 0) return [];
    const batch = this.queue.splice(0);
    const touched = new Set<number>();
    this.opts.proposals.transaction(() => {
      for (const q of batch) {
        const id = this.record(q);
        if (id !== null) touched.add(id);
      }
    });
    return this.opts.published(touched);
  }

  /** One queued denial into its proposal; the proposal's id, or null when it was left out. */
  private record(q: Queued): number | null {
    const rec = this.opts.store.get(q.sandboxId);
    if (!rec) return null;
    const { gen, rev } = this.opts.generationOf(rec);
    // Allowed by the policy in force: refused for another reason, or allowed since (approved).
    if (allowedBy(gen, q.facts)) return null;
    const key = proposalKey(q.facts);
    const sample: ProposalSample = { t: q.t, method: q.facts.method, path: q.facts.path };
    const open = this.opts.proposals.open(rec.id, key, q.t);
    this.stored.add(`${rec.id}|${key}`);
    if (open) {
      this.opts.proposals.hit(open.id, {
        hits: 1,
        lastSeen: Math.max(open.lastSeen, q.t),
        samples: q.facts.level === 'request' ? mergeSamples(open.samples, sample) : open.samples,
        policyRev: rev,
        ancestors: [...q.facts.ancestors],
      });
      if (q.rationale !== undefined) this.opts.proposals.setRationale(open.id, q.rationale);
      return open.id;
    }
    if (this.opts.proposals.list([rec.id], 'pending', MAX_OPEN).length >= MAX_OPEN) {
      this.dropped++;
      return null;
    }
    return this.opts.proposals.insert({
      sandboxId: rec.id,
      key,
      source: q.source,
      level: q.facts.level,
      host: q.facts.host,
      port: q.facts.port,
      binary: q.facts.binary,
      ancestors: [...q.facts.ancestors],
      method: q.facts.method ?? null,
      pathPattern: q.facts.level === 'request' ? key.split('|')[4]! : null,
      hits: 1,
      firstSeen: q.t,
      lastSeen: q.t,
      samples: q.facts.level === 'request' ? [sample] : [],
      policyRev: rev,
      rationale: q.rationale ?? null,
    }).id;
  }
}

/** The facts of a policy denial in an audit event, or null for anything else. */
export function denialOf(e: OcsfEvent): DenialFacts | null {
  if (e.disposition_id !== 2) return null;
  const actor = e.actor as { process?: { file?: { path?: string }; lineage?: string[] } } | undefined;
  const binary = actor?.process?.file?.path ?? '';
  const ancestors = Array.isArray(actor?.process?.lineage) ? actor.process.lineage : [];
  if (e.class_uid === 4001 && e.activity_id === 5) {
    // The kernel's refusals of connections that bypass the proxy: no rule opens those.
    if (e.unmapped.refused_by !== undefined) return null;
    const dst = e.dst_endpoint as { hostname?: string; port?: number; ip?: string } | undefined;
    if (!dst?.hostname || !dst.port || dst.hostname === '(unknown)') return null;
    return { level: 'connect', host: dst.hostname, port: dst.port, binary, ancestors, ip: dst.ip };
  }
  if (e.class_uid === 4002) {
    const req = e.http_request as
      { http_method?: string; url?: { hostname?: string; port?: number; path?: string } } | undefined;
    const code = (e.http_response as { code?: number } | undefined)?.code;
    if (code !== undefined && code !== 403) return null; // a malformed request, not a policy refusal
    const url = req?.url;
    if (!req?.http_method || req.http_method === 'UNKNOWN' || !url?.hostname || !url.port) return null;
    return {
      level: 'request',
      host: url.hostname,
      port: url.port,
      binary,
      ancestors,
      method: req.http_method.toUpperCase(),
      path: redactPath(url.path ?? '/'),
    };
  }
  return null;
}

/** The newest samples, one per distinct method and path. */
function mergeSamples(samples: ProposalSample[], s: ProposalSample): ProposalSample[] {
  return [...samples.filter((o) => o.method !== s.method || o.path !== s.path), s];
}

/** The facts of a stored proposal, its newest sample's path as the path. */
export function factsOf(p: ProposalRecord): DenialFacts {
  const last = p.samples.at(-1);
  return {
    level: p.level,
    host: p.host,
    port: p.port,
    binary: p.binary,
    ancestors: p.ancestors,
    method: p.method ?? undefined,
    path: last?.path,
  };
}

/** The paths of its samples (redacted), oldest first. */
export function pathsOf(p: ProposalRecord): string[] {
  return p.samples.map((s) => s.path ?? '/');
}
