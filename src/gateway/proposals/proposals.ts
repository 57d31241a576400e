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
 * From the audit stream to stored rows (dedup, batching, the cap on open proposals): the intake,
 * proposal-intake.ts. What the operator sees of a proposal (its rule and risk notes against the
 * latest revision, proposal-rules.ts): proposal-views.ts. Here: what the operator decides.
 */
import type { OcsfEvent } from '../../audit/index.js';
import { ApiError } from '../api/errors.js';
import type { Caller } from '../api/router.js';
import type { AuditRouter } from '../audit-router.js';
import type { PolicyService } from '../policy/policy-service.js';
import { factsOf, pathsOf, ProposalIntake } from './proposal-intake.js';
import { ProposalViews, type ProposalView } from './proposal-views.js';
import {
  allowedBy,
  editRule,
  riskNotes,
  smallestRule,
  wireOps,
  type DenialFacts,
  type RuleEdit,
} from './proposal-rules.js';

export type { RuleEdit } from './proposal-rules.js';
import type { PolicyRevisionStore } from '../store/policy-revisions.js';
import type { ProposalRecord, ProposalStore } from '../store/proposal-store.js';
import type { SandboxRecord, SandboxStore } from '../store/sandbox-store.js';

export interface ApprovalResult {
  proposal: ProposalView;
  /** applied: live now; stored: the sandbox is stopped and starts with it; superseded: already allowed. */
  outcome: 'applied' | 'stored' | 'superseded';
  revision: number | null;
  /** The risk notes of the rule as written (the operator's edit, if any): what the approval widened. */
  risks: string[];
}

export interface ProposalServiceOptions {
  proposals: ProposalStore;
  store: SandboxStore;
  revisions: PolicyRevisionStore;
  policies: PolicyService;
  audit: AuditRouter;
  log: (entry: Record<string, unknown>) => void;
}

export class ProposalService {
  private readonly views: ProposalViews;
  private readonly intake: ProposalIntake;
  private readonly listeners = new Set<(p: ProposalView) => void>();
  private unsubscribe: (() => void) | null = null;

  constructor(private readonly opts: ProposalServiceOptions) {
    this.views = new ProposalViews(opts.revisions);
    this.intake = new ProposalIntake({
      proposals: opts.proposals,
      store: opts.store,
      generationOf: (rec) => this.views.generationOf(rec),
      published: (ids) => this.published(ids),
    });
  }

  /** Denials not stored because their sandbox had MAX_OPEN open proposals. */
  get dropped(): number {
    return this.intake.dropped;
  }

  /** Loads the policy engine and starts listening to the audit stream. */
  async start(): Promise<void> {
    await this.views.start();
    this.unsubscribe = this.opts.audit.subscribe((id, e) => this.onEvent(id, e));
  }

  close(): void {
    this.unsubscribe?.();
    this.intake.close();
  }

  /** Live proposal changes (new, more hits, decided), every owner's: callers filter. */
  subscribe(listener: (p: ProposalView) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** The audit listener: runs on the proxy's turn, so it only queues (proposal-intake.ts). */
  private onEvent(sandboxId: string, e: OcsfEvent): void {
    // A sandbox's lifecycle event after its deletion: what was kept for it goes too.
    if (e.class_uid === 6002 && this.views.knows(sandboxId) && !this.opts.store.get(sandboxId)) {
      this.views.forget(sandboxId);
      this.intake.forgetSandbox(sandboxId);
      return;
    }
    this.intake.onEvent(sandboxId, e);
  }

  /**
   * An agent's own proposal (policy.local): what it wants and why. Refused when the policy
   * already allows it; otherwise stored (or merged into the open one) like a denial.
   */
  submit(sandboxId: string, facts: DenialFacts, rationale: string): ProposalView | null {
    return this.intake.submit(sandboxId, facts, rationale);
  }

  /** Proposals the intake stored or hit: their views, told to the listeners. */
  private published(ids: ReadonlySet<number>): ProposalView[] {
    const views: ProposalView[] = [];
    for (const id of ids) {
      const p = this.opts.proposals.get(id);
      const rec = p && this.opts.store.get(p.sandboxId);
      if (!p || !rec) continue;
      const v = this.views.view(p, rec);
      views.push(v);
      for (const l of this.listeners) l(v);
    }
    return views;
  }

  /** The caller's proposals (an admin's: everyone's with `all`), of one sandbox or all. */
  list(
    caller: Caller,
    which: 'pending' | 'decided' | 'all',
    filter: { sandbox?: string | undefined; owner?: number | undefined; all?: boolean | undefined },
  ): ProposalView[] {
    const recs = this.sandboxesOf(caller, filter);
    const byId = new Map(recs.map((r) => [r.id, r]));
    return this.opts.proposals
      .list([...byId.keys()], which)
      .map((p) => this.views.view(p, byId.get(p.sandboxId)!));
  }

  get(caller: Caller, id: number): ProposalView {
    const { p, rec } = this.owned(caller, id);
    return this.views.view(p, rec);
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
      const { gen, entries } = this.views.generationOf(rec);
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
          origin: { source: 'approve', proposal: p.id },
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
    this.intake.forget(p.sandboxId, p.key);
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
    const v = this.views.view(this.opts.proposals.get(p.id)!, rec);
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
