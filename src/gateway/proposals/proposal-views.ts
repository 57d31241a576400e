/**
 * What the operator sees of a proposal (`carapace rules`, `term`, the dashboard): its record, and
 * the smallest rule that would allow it with that rule's risk notes, computed against the
 * sandbox's latest policy revision (proposal-rules.ts), which is compiled once per revision.
 */
import type { PolicyGeneration } from '../../policy/index.js';
import { ApiError } from '../api/errors.js';
import { factsOf, pathsOf } from './proposal-intake.js';
import { allowedBy, riskNotes, smallestRule, type ProposedRule } from './proposal-rules.js';
import type { PolicyRevisionStore } from '../store/policy-revisions.js';
import type { ProposalRecord } from '../store/proposal-store.js';
import type { SandboxRecord } from '../store/sandbox-store.js';

type Engine = typeof import('../../policy/index.js');

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

export class ProposalViews {
  private engine: Engine | null = null;
  private readonly compiled = new Map<
    string,
    { hash: string; gen: PolicyGeneration; entries: Set<string> }
  >();

  constructor(private readonly revisions: PolicyRevisionStore) {}

  /** Loads the policy engine. */
  async start(): Promise<void> {
    this.engine = await import('../../policy/index.js');
  }

  /** Whether a sandbox's latest revision is kept compiled. */
  knows(sandboxId: string): boolean {
    return this.compiled.has(sandboxId);
  }

  /** Drops what is kept of a sandbox (deleted). */
  forget(sandboxId: string): void {
    this.compiled.delete(sandboxId);
  }

  /** The compiled latest revision of a sandbox, compiled once per revision. */
  generationOf(rec: SandboxRecord): { gen: PolicyGeneration; rev: number; entries: Set<string> } {
    const engine = this.engine;
    if (!engine) throw new ApiError('INTERNAL', 'proposals are not started');
    const latest = this.revisions.get(rec.id);
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

  view(p: ProposalRecord, rec: SandboxRecord): ProposalView {
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
