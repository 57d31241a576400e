/**
 * Proposals: every policy denial in a gateway sandbox becomes, pushed from the audit stream as it
 * happens (no polling), a pending proposal the operator approves or rejects (`carapace rules`,
 * `carapace term`, the dashboard). Denials are deduplicated per sandbox by host, port, binary and,
 * for a request, method and path pattern; each proposal keeps its hits, first and last time seen,
 * the binary and its ancestors, redacted samples, and the policy revision it was last denied under.
 *
 * Approving writes a policy revision through the policy service (applied live, as `policy update`
 * does). The rule is computed at that moment against the latest revision, which is the re-check: a
 * proposal made against an older revision that the latest already allows is closed as
 * `superseded` with no revision written; otherwise the rule is added to the latest text with a
 * compare-and-swap on its revision (a change landing between the check and the write makes it
 * start over). Rejecting keeps the proposal closed, with its hits still counted, for good or for a
 * quiet period (`--for`): however often the agent retries meanwhile, it does not come back.
 *
 * What counts as a denial here: a connection or request the policy refuses. Refusals for other
 * reasons (the SSRF guard, an ambiguous caller, a limit, a connection the kernel refused because it
 * bypassed the proxy) are checked against the policy in force, which allows them, and are left out:
 * no rule would let them through.
 *
 * Cost on the proxy's path: the audit listener only queues the event; the queue is turned into
 * rows in one transaction a few milliseconds later, off the proxy's turn, and a flood of one denial
 * is one row whose hit count grows. Pending proposals per sandbox are capped (MAX_OPEN); beyond
 * the cap new keys are counted as dropped, never stored.
 */
import type { OcsfEvent } from '../audit/index.js';
import type { PolicyGeneration } from '../policy/index.js';
import { ApiError } from './api/errors.js';
import type { Caller } from './api/router.js';
import type { AuditRouter } from './audit-router.js';
import type { PolicyService } from './policy-service.js';
import {
  allowedBy,
  proposalKey,
  redactPath,
  riskNotes,
  smallestRule,
  wireOps,
  type DenialFacts,
  type ProposedRule,
} from './proposal-rules.js';
import type { PolicyRevisionStore } from './store/policy-revisions.js';
import type { ProposalRecord, ProposalSample, ProposalStore } from './store/proposal-store.js';
import type { SandboxRecord, SandboxStore } from './store/sandbox-store.js';

type Engine = typeof import('../policy/index.js');

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

/** A proposal as the API shows it. */
export interface ProposalView {
  id: number;
  sandbox: string;
  owner: number;
  status: ProposalRecord['status'];
  source: ProposalRecord['source'];
  level: ProposalRecord['level'];
  host: string;
  port: number;
  binary: string;
  ancestors: string[];
  method: string | null;
  pathPattern: string | null;
  hits: number;
  firstSeen: string;
  lastSeen: string;
  samples: { t: string; method?: string | undefined; path?: string | undefined }[];
  policyRev: number;
  /** The smallest rule that would allow it, against the latest revision (null: nothing to allow). */
  rule: ProposedRule | null;
  risks: string[];
  rationale: string | null;
  decidedBy: number | null;
  decidedAt: string | null;
  quietUntil: string | null;
  appliedRev: number | null;
  outcome: string | null;
}

export interface ApprovalResult {
  proposal: ProposalView;
  /** applied: live now; stored: the sandbox is stopped and starts with it; superseded: already allowed. */
  outcome: 'applied' | 'stored' | 'superseded';
  revision: number | null;
  /** The risk notes of the rule as written (the operator's edit, if any): what the approval widened. */
  risks: string[];
}

/** Fields of the rule an operator may change before approving (`approve --edit`). */
export interface RuleEdit {
  host?: string | undefined;
  port?: number | undefined;
  binaries?: string[] | undefined;
  method?: string | undefined;
  path?: string | undefined;
}

export interface ProposalServiceOptions {
  proposals: ProposalStore;
  store: SandboxStore;
  revisions: PolicyRevisionStore;
  policies: PolicyService;
  audit: AuditRouter;
  log: (entry: Record<string, unknown>) => void;
}

interface Queued {
  sandboxId: string;
  facts: DenialFacts;
  t: number;
  source: 'denial' | 'agent';
  rationale?: string | undefined;
}

export class ProposalService {
  private engine: Engine | null = null;
  private readonly compiled = new Map<
    string,
    { hash: string; gen: PolicyGeneration; entries: Set<string> }
  >();
  private readonly queue: Queued[] = [];
  private timer: NodeJS.Timeout | null = null;
  private timerDue = 0;
  /** `sandbox|key` of proposals stored as open (pending or quiet) since the gateway started. */
  private readonly stored = new Set<string>();
  private readonly listeners = new Set<(p: ProposalView) => void>();
  private unsubscribe: (() => void) | null = null;
  /** Denials not stored because their sandbox had MAX_OPEN open proposals. */
  dropped = 0;

  constructor(private readonly opts: ProposalServiceOptions) {}

  /** Loads the policy engine and starts listening to the audit stream. */
  async start(): Promise<void> {
    this.engine = await import('../policy/index.js');
    this.unsubscribe = this.opts.audit.subscribe((id, e) => this.onEvent(id, e));
  }

  close(): void {
    this.unsubscribe?.();
    if (this.timer) clearTimeout(this.timer);
    this.flush();
  }

  /** Live proposal changes (new, more hits, decided), every owner's: callers filter. */
  subscribe(listener: (p: ProposalView) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** The audit listener: runs on the proxy's turn, so it only queues. */
  private onEvent(sandboxId: string, e: OcsfEvent): void {
    // A sandbox's lifecycle event after its deletion: what was kept for it goes too.
    if (e.class_uid === 6002 && this.compiled.has(sandboxId) && !this.opts.store.get(sandboxId)) {
      this.compiled.delete(sandboxId);
      for (const k of this.stored) if (k.startsWith(`${sandboxId}|`)) this.stored.delete(k);
      return;
    }
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
    const { gen } = this.generationOf(rec);
    if (allowedBy(gen, facts)) return null;
    this.queue.push({ sandboxId, facts, t: Date.now(), source: 'agent', rationale });
    const changed = this.flush();
    return changed.find((p) => p.sandbox === rec.name && p.owner === rec.ownerUid) ?? null;
  }

  /** Stores what was queued, one transaction; tells the listeners. */
  private flush(): ProposalView[] {
    if (this.queue.length === 0) return [];
    const batch = this.queue.splice(0);
    const touched = new Set<number>();
    this.opts.proposals.transaction(() => {
      for (const q of batch) {
        const id = this.record(q);
        if (id !== null) touched.add(id);
      }
    });
    const views: ProposalView[] = [];
    for (const id of touched) {
      const p = this.opts.proposals.get(id);
      const rec = p && this.opts.store.get(p.sandboxId);
      if (!p || !rec) continue;
      const v = this.view(p, rec);
      views.push(v);
      for (const l of this.listeners) l(v);
    }
    return views;
  }

  /** One queued denial into its proposal; the proposal's id, or null when it was left out. */
  private record(q: Queued): number | null {
    const rec = this.opts.store.get(q.sandboxId);
    if (!rec) return null;
    const { gen, rev } = this.generationOf(rec);
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

  /** The caller's proposals (an admin's: everyone's with `all`), of one sandbox or all. */
  list(
    caller: Caller,
    which: 'pending' | 'decided' | 'all',
    filter: { sandbox?: string | undefined; owner?: number | undefined; all?: boolean | undefined },
  ): ProposalView[] {
    const recs = this.sandboxesOf(caller, filter);
    const byId = new Map(recs.map((r) => [r.id, r]));
    return this.opts.proposals.list([...byId.keys()], which).map((p) => this.view(p, byId.get(p.sandboxId)!));
  }

  get(caller: Caller, id: number): ProposalView {
    const { p, rec } = this.owned(caller, id);
    return this.view(p, rec);
  }

  /** Approves: the rule (edited, when `edit` is given) becomes a policy revision, applied live. */
  async approve(caller: Caller, id: number, edit?: RuleEdit): Promise<ApprovalResult> {
    return (await this.approveIf(caller, id, edit, false))!;
  }

  /**
   * Approves, or with `safeOnly` returns null instead of writing a rule that has risk notes: the
   * notes are those of the rule computed here, against the latest revision, not of the list the
   * caller saw (a change in between may have bound a credential to the endpoint, say).
   */
  private async approveIf(
    caller: Caller,
    id: number,
    edit: RuleEdit | undefined,
    safeOnly: boolean,
  ): Promise<ApprovalResult | null> {
    for (let attempt = 0; ; attempt++) {
      const { p, rec } = this.owned(caller, id);
      if (p.status !== 'pending' && p.status !== 'rejected') {
        throw new ApiError(
          'VERSION_CONFLICT',
          `proposal ${id} is already ${p.status}: carapace rules history`,
        );
      }
      const latest = this.opts.revisions.get(rec.id);
      if (!latest) throw new ApiError('INTERNAL', `sandbox ${rec.name} has no policy revision`);
      const { gen, entries } = this.generationOf(rec);
      const facts = factsOf(p);
      if (edit === undefined && allowedBy(gen, facts)) {
        this.decide(p, rec, caller, {
          status: 'superseded',
          outcome: `already allowed by policy revision ${latest.rev}`,
        });
        return { proposal: this.get(caller, id), outcome: 'superseded', revision: null, risks: [] };
      }
      const rule = editRule(smallestRule(gen, facts, pathsOf(p), entries), edit);
      const risks = riskNotes(rule, facts);
      if (safeOnly && risks.length > 0) return null;
      try {
        const result = await this.opts.policies.update(caller, rec.name, rec.ownerUid, wireOps(rule), {
          baseRev: latest.rev,
        });
        const outcome = result.outcome === 'stored' ? 'stored' : 'applied';
        this.decide(p, rec, caller, {
          status: 'approved',
          appliedRev: result.revision.rev,
          outcome: `${rule.summary}: policy revision ${result.revision.rev}${outcome === 'stored' ? ' (at the next start)' : ''}`,
          risks,
        });
        return { proposal: this.get(caller, id), outcome, revision: result.revision.rev, risks };
      } catch (err) {
        // Another change landed between the check and the write: check again on the new latest.
        if ((err as { code?: string }).code === 'VERSION_CONFLICT' && attempt < 3) continue;
        if (edit !== undefined) throw editedRuleError(err);
        throw err;
      }
    }
  }

  /** Rejects: closed for good, or until `forMs` from now (it then opens again on the next denial). */
  reject(caller: Caller, id: number, forMs?: number): ProposalView {
    const { p, rec } = this.owned(caller, id);
    if (p.status !== 'pending')
      throw new ApiError('VERSION_CONFLICT', `proposal ${id} is already ${p.status}`);
    const quietUntil = forMs === undefined ? null : Date.now() + forMs;
    this.decide(p, rec, caller, {
      status: 'rejected',
      quietUntil,
      outcome: quietUntil === null ? 'rejected' : `rejected until ${new Date(quietUntil).toISOString()}`,
    });
    return this.get(caller, id);
  }

  /** Approves every pending proposal without risk notes, one revision each, oldest first. */
  async approveSafe(
    caller: Caller,
    filter: { sandbox?: string | undefined; owner?: number | undefined },
  ): Promise<{ approved: ApprovalResult[]; skipped: ProposalView[] }> {
    const approved: ApprovalResult[] = [];
    const skipped: ProposalView[] = [];
    for (const v of this.list(caller, 'pending', filter).reverse()) {
      // One the latest revision allows already (rule null) is closed as superseded, not skipped:
      // it has no risk to weigh, and left pending it would be counted among the risky ones.
      const a = v.risks.length > 0 ? null : await this.approveIf(caller, v.id, undefined, true);
      if (a) approved.push(a);
      else skipped.push(this.get(caller, v.id));
    }
    return { approved, skipped };
  }

  private decide(
    p: ProposalRecord,
    rec: SandboxRecord,
    caller: Caller,
    d: {
      status: ProposalRecord['status'];
      outcome: string;
      quietUntil?: number | null;
      appliedRev?: number;
      risks?: string[];
    },
  ): void {
    this.stored.delete(`${p.sandboxId}|${p.key}`);
    const { risks, ...decision } = d;
    if (!this.opts.proposals.decide(p.id, p.status, { ...decision, by: caller.uid, at: Date.now() })) {
      throw new ApiError(
        'VERSION_CONFLICT',
        `proposal ${p.id} was decided meanwhile: carapace rules history`,
      );
    }
    this.opts.log({
      level: 'info',
      msg: 'proposal decided',
      sandbox: rec.name,
      owner: rec.ownerUid,
      proposal: p.id,
      status: d.status,
      by: caller.uid,
      outcome: d.outcome,
      ...(risks !== undefined && risks.length > 0 ? { risks } : {}),
    });
    const v = this.view(this.opts.proposals.get(p.id)!, rec);
    for (const l of this.listeners) l(v);
  }

  private owned(caller: Caller, id: number): { p: ProposalRecord; rec: SandboxRecord } {
    const p = this.opts.proposals.get(id);
    const rec = p && this.opts.store.get(p.sandboxId);
    if (!p || !rec || (rec.ownerUid !== caller.uid && !caller.admin)) {
      throw new ApiError('NOT_FOUND', `no proposal ${id} (carapace rules list shows yours)`);
    }
    return { p, rec };
  }

  private sandboxesOf(
    caller: Caller,
    f: { sandbox?: string | undefined; owner?: number | undefined; all?: boolean | undefined },
  ): SandboxRecord[] {
    if (f.owner !== undefined && f.owner !== caller.uid && !caller.admin) {
      throw new ApiError(
        'FORBIDDEN',
        `only root and members of carapace-admin act on other users' sandboxes`,
      );
    }
    if (f.all === true && !caller.admin) {
      throw new ApiError('FORBIDDEN', 'only root and members of carapace-admin see every sandbox');
    }
    if (f.sandbox !== undefined) {
      const rec = this.opts.store.byName(f.owner ?? caller.uid, f.sandbox);
      if (!rec) throw new ApiError('SANDBOX_NOT_FOUND', `no sandbox named "${f.sandbox}"`);
      return [rec];
    }
    return this.opts.store.list(f.all === true ? undefined : (f.owner ?? caller.uid));
  }

  /** The compiled latest revision of a sandbox, compiled once per revision. */
  private generationOf(rec: SandboxRecord): { gen: PolicyGeneration; rev: number; entries: Set<string> } {
    const engine = this.engine;
    if (!engine) throw new ApiError('INTERNAL', 'proposals are not started');
    const latest = this.opts.revisions.get(rec.id);
    if (!latest) throw new ApiError('INTERNAL', `sandbox ${rec.name} has no policy revision`);
    const cached = this.compiled.get(rec.id);
    if (cached && cached.hash === latest.hash) return { ...cached, rev: latest.rev };
    const parsed = engine.parsePolicy(latest.text, `${rec.name}.yaml`);
    if (!parsed.ok) throw new ApiError('INTERNAL', `the stored policy of ${rec.name} does not parse`);
    const entry = {
      hash: latest.hash,
      gen: engine.compilePolicy(parsed.policy),
      entries: new Set(Object.keys(parsed.policy.network_policies ?? {})),
    };
    this.compiled.set(rec.id, entry);
    return { ...entry, rev: latest.rev };
  }

  private view(p: ProposalRecord, rec: SandboxRecord): ProposalView {
    let rule: ProposedRule | null = null;
    let risks: string[] = [];
    if (p.status === 'pending' || p.status === 'rejected') {
      try {
        const { gen, entries } = this.generationOf(rec);
        const facts = factsOf(p);
        if (!allowedBy(gen, facts)) {
          rule = smallestRule(gen, facts, pathsOf(p), entries);
          risks = riskNotes(rule, facts);
        }
      } catch {
        // a sandbox being deleted: shown without a rule
      }
    }
    const iso = (t: number | null) => (t === null ? null : new Date(t).toISOString());
    return {
      id: p.id,
      sandbox: rec.name,
      owner: rec.ownerUid,
      status: p.status,
      source: p.source,
      level: p.level,
      host: p.host,
      port: p.port,
      binary: p.binary,
      ancestors: p.ancestors,
      method: p.method,
      pathPattern: p.pathPattern,
      hits: p.hits,
      firstSeen: new Date(p.firstSeen).toISOString(),
      lastSeen: new Date(p.lastSeen).toISOString(),
      samples: p.samples.map((s) => ({ t: new Date(s.t).toISOString(), method: s.method, path: s.path })),
      policyRev: p.policyRev,
      rule,
      risks,
      rationale: p.rationale,
      decidedBy: p.decidedBy,
      decidedAt: iso(p.decidedAt),
      quietUntil: iso(p.quietUntil),
      appliedRev: p.appliedRev,
      outcome: p.outcome,
    };
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

function factsOf(p: ProposalRecord): DenialFacts {
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

function pathsOf(p: ProposalRecord): string[] {
  return p.samples.map((s) => s.path ?? '/');
}

/** The newest samples, one per distinct method and path. */
function mergeSamples(samples: ProposalSample[], s: ProposalSample): ProposalSample[] {
  return [...samples.filter((o) => o.method !== s.method || o.path !== s.path), s];
}

/**
 * A policy problem with an operator's edited rule, said as one: the policy engine names the
 * `policy update` flag the operation came from (`--add-rule: …`), which the operator never typed.
 */
function editedRuleError(err: unknown): unknown {
  const e = err as { code?: string; message?: string; details?: unknown };
  if (e.code !== 'POLICY_INVALID') return err;
  const first = Array.isArray(e.details) ? (e.details[0] as { message?: unknown } | undefined) : undefined;
  const message = typeof first?.message === 'string' ? first.message : (e.message ?? '');
  return new ApiError('POLICY_INVALID', `the edited rule: ${message.replace(/^--[a-z-]+: /, '')}`, e.details);
}

function editRule(rule: ProposedRule, edit: RuleEdit | undefined): ProposedRule {
  if (!edit) return rule;
  const out: ProposedRule = { ...rule };
  if (edit.host !== undefined) out.host = edit.host;
  if (edit.port !== undefined) out.port = edit.port;
  if (rule.kind === 'endpoint' && edit.binaries !== undefined) out.binaries = edit.binaries;
  if (rule.kind === 'request') {
    if (edit.method !== undefined) out.method = edit.method.toUpperCase();
    if (edit.path !== undefined) out.path = edit.path;
  }
  out.summary =
    out.kind === 'request'
      ? `allow ${out.method} ${out.path} on ${out.host}:${out.port} (network policy "${out.policyKey}")`
      : `allow ${out.binaries.join(', ') || 'any program'} to connect to ${out.host}:${out.port}`;
  return out;
}
