/**
 * Applying a policy change to a sandbox: the one place that decides whether a new policy text can
 * take effect, and makes it so. `carapace run --policy FILE` uses it for each save of the file
 * (policy-watch.ts); the gateway for each policy revision (src/gateway/policy/policy-service.ts).
 *
 * Rules (docs/policy.md, "Live changes"):
 * - a text that does not parse is refused; the policy in force stays;
 * - on a running sandbox, a change to a static section (filesystem_policy, landlock, process,
 *   limits, listen_ports) or to `version` cannot take effect: those shape the sandbox itself when it
 *   starts (mounts, Landlock, identity, cgroups, bound ports). It is refused (`needs-restart`), and
 *   the policy in force stays;
 * - otherwise the change is applied: its network and inference sections are compiled into a new
 *   generation and swapped into the sandbox's proxy in one assignment (each connection is judged by
 *   one generation; raw tunnels the new one no longer allows are closed). A sandbox that does not
 *   run (no target) takes any valid change: it is what it will start with.
 *
 * Every outcome is one 5019 audit event that says who made the change and which revision it is
 * (the provenance). Deciding and swapping are two steps so that a caller can record the change in
 * between: the gateway stores a revision first, and a change it could not store never takes
 * effect. `plan` decides and compiles, `commit` swaps and audits; `apply` is both.
 */
import { configChange, type AuditSink } from '../audit/index.js';
import type { GenerationChange } from '../proxy/index.js';
import {
  changedSections,
  compilePolicy,
  parsePolicy,
  type Diagnostic,
  type Policy,
  type PolicyGeneration,
  type SectionChanges,
} from '../policy/index.js';

/** What a running sandbox offers a policy change: its proxy (SandboxProxy). */
export interface PolicyTarget {
  /** Swaps in a generation, audits the swap (with `change`), returns how many tunnels it closed. */
  setGeneration(next: PolicyGeneration, change?: GenerationChange): number;
  /** The generation number in force. */
  readonly generation: number;
}

/** Where a change comes from; never taken from the policy text itself. */
export interface PolicyProvenance {
  /** A save of the policy file (`carapace run`), or the gateway's API. */
  source: 'file' | 'api';
  file?: string | undefined;
  /** The uid that made the change: for the API, the caller as the kernel reported it. */
  author?: number | undefined;
  /** set | update | rollback (the gateway's). */
  action?: string | undefined;
  /** When not the policy command itself: approve (a proposal, `proposal`) or inference (the gateway's). */
  origin?: string | undefined;
  proposal?: number | undefined;
  /** The revision the change becomes, and the revision in force before it (the gateway's). */
  revision?: number | undefined;
  previousRevision?: number | undefined;
  /** For a rollback: the revision whose text it restores. */
  restores?: number | undefined;
}

export type PolicyPlan =
  | {
      outcome: 'applied';
      policy: Policy;
      sections: SectionChanges;
      /** The compiled network side, when a dynamic section changed on a running sandbox. */
      generation: PolicyGeneration | null;
      /** @internal the policy this plan was made against (commit checks it is still in force) */
      base: Policy;
    }
  | { outcome: 'refused'; message: string; diagnostics: readonly Diagnostic[] }
  | { outcome: 'needs-restart'; message: string; sections: SectionChanges; static: string[] };

export type PolicyApplyResult =
  | {
      outcome: 'applied';
      policy: Policy;
      sections: SectionChanges;
      /** The proxy's generation now in force; null when nothing was swapped (no dynamic section
       * changed, or the sandbox does not run). */
      generation: number | null;
      closedTunnels: number;
    }
  | { outcome: 'refused'; message: string; diagnostics: readonly Diagnostic[] }
  | { outcome: 'needs-restart'; message: string; sections: SectionChanges; static: string[] };

export class PolicyApplyError extends Error {
  override name = 'PolicyApplyError';
  readonly code = 'POLICY_PLAN_STALE';
}

export interface LivePolicyOptions {
  /** The sandbox as its audit trail names it (the gateway's id; a run's name). */
  sandbox: string;
  /** The policy in force. */
  current: Policy;
  /** Its revision, when the gateway keeps revisions. */
  revision?: number | undefined;
  audit: AuditSink;
  /** The running sandbox's proxy; null when the sandbox does not run. */
  target: PolicyTarget | null;
}

/** The policy in force for one sandbox, and the changes made to it. */
export class LivePolicy {
  private policy: Policy;
  private rev: number | undefined;

  constructor(private readonly opts: LivePolicyOptions) {
    this.policy = opts.current;
    this.rev = opts.revision;
  }

  get current(): Policy {
    return this.policy;
  }

  /** The revision in force (the gateway's), if known. */
  get revision(): number | undefined {
    return this.rev;
  }

  get running(): boolean {
    return this.opts.target !== null;
  }

  /**
   * Decides what `text` would do, without changing anything. `file` names it in diagnostics.
   * `policy`: `text` already parsed by the caller (a policy edit has it), not parsed again.
   */
  plan(text: string, file: string, policy?: Policy): PolicyPlan {
    let next = policy;
    if (next === undefined) {
      const parsed = parsePolicy(text, file);
      if (!parsed.ok) {
        const first = parsed.diagnostics[0];
        const where = first ? `${first.file}:${first.line}:${first.col}: ${first.message}` : file;
        return { outcome: 'refused', message: where, diagnostics: parsed.diagnostics };
      }
      next = parsed.policy;
    }
    const sections = changedSections(this.policy, next);
    if (this.opts.target !== null && !sections.hotReloadable) {
      const what = sections.static.length > 0 ? [...sections.static] : ['version'];
      return {
        outcome: 'needs-restart',
        message: `${what.join(', ')} cannot change while the sandbox runs`,
        sections,
        static: what,
      };
    }
    const generation = this.opts.target !== null && sections.dynamic.length > 0 ? compilePolicy(next) : null;
    return { outcome: 'applied', policy: next, sections, generation, base: this.policy };
  }

  /**
   * Makes a plan take effect (applied) or records its refusal; one 5019 event either way. A plan
   * made before another change was committed is stale and throws: plan and commit must not be
   * separated by anything that can change this policy.
   */
  commit(plan: PolicyPlan, provenance: PolicyProvenance): PolicyApplyResult {
    const { sandbox, audit } = this.opts;
    const who = describe(provenance);
    const details = provenanceDetails(provenance, this.rev);
    if (plan.outcome === 'refused') {
      audit.emit(
        configChange({
          sandbox,
          accepted: false,
          message: `policy change refused (${who}): ${plan.message}`,
          reason: 'invalid policy',
          details,
        }),
      );
      return plan;
    }
    if (plan.outcome === 'needs-restart') {
      audit.emit(
        configChange({
          sandbox,
          accepted: false,
          message: `policy change refused (${who}): ${plan.message}`,
          reason: 'static section changed',
          details: { ...details, static: plan.static },
        }),
      );
      return plan;
    }
    if (plan.base !== this.policy) {
      throw new PolicyApplyError('the policy changed since this change was planned: plan it again');
    }
    const sections = { static: plan.sections.static, dynamic: plan.sections.dynamic };
    let generation: number | null = null;
    let closedTunnels = 0;
    const target = this.opts.target;
    if (target !== null && plan.generation !== null) {
      // The proxy audits the swap itself (5019, with the tunnels it closed), told who made it.
      closedTunnels = target.setGeneration(plan.generation, { what: who, details: { ...details, sections } });
      generation = target.generation;
    } else {
      audit.emit(
        configChange({
          sandbox,
          accepted: true,
          message:
            target === null
              ? `policy change stored (${who}): in force when the sandbox starts`
              : `policy change applied (${who}): no network or inference change`,
          details: { ...details, sections },
        }),
      );
    }
    this.policy = plan.policy;
    if (provenance.revision !== undefined) this.rev = provenance.revision;
    return { outcome: 'applied', policy: plan.policy, sections: plan.sections, generation, closedTunnels };
  }

  /** `plan` then `commit`. */
  apply(text: string, file: string, provenance: PolicyProvenance): PolicyApplyResult {
    return this.commit(this.plan(text, file), provenance);
  }
}

/** "policy revision 3 (rollback to 1) by uid 1000", "a save of /etc/agent/policy.yaml". */
function describe(p: PolicyProvenance): string {
  const parts: string[] = [];
  if (p.revision !== undefined) parts.push(`policy revision ${p.revision}`);
  else if (p.source === 'file') parts.push(`a save of ${p.file ?? 'the policy file'}`);
  else parts.push('a policy change');
  if (p.proposal !== undefined) parts.push(`(approve of proposal ${p.proposal})`);
  else if (p.origin !== undefined) parts.push(`(${p.origin} ${p.action ?? 'change'})`);
  else if (p.action === 'rollback' && p.restores !== undefined) parts.push(`(rollback to ${p.restores})`);
  else if (p.action !== undefined) parts.push(`(${p.action})`);
  if (p.author !== undefined) parts.push(`by uid ${p.author}`);
  return parts.join(' ');
}

function provenanceDetails(p: PolicyProvenance, inForce: number | undefined): Record<string, unknown> {
  const d: Record<string, unknown> = { source: p.source };
  if (p.file !== undefined) d.file = p.file;
  if (p.author !== undefined) d.author_uid = p.author;
  if (p.action !== undefined) d.action = p.action;
  if (p.origin !== undefined) d.origin = p.origin;
  if (p.proposal !== undefined) d.proposal_id = p.proposal;
  if (p.revision !== undefined) d.revision = p.revision;
  const previous = p.previousRevision ?? inForce;
  if (previous !== undefined) d.previous_revision = previous;
  if (p.restores !== undefined) d.restores = p.restores;
  return d;
}
