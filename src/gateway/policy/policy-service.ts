/**
 * Live policy for the gateway's sandboxes: read a sandbox's policy (any revision) and its history,
 * and change it — set a whole text, update it by operations (the `policy apply-ops` edits, made on
 * the text of the revision in force, comments kept), or roll back to an earlier revision. Every
 * change that is taken becomes a stored revision (policy-revisions.ts) with its author, time, hash
 * and diff, and one 5019 event in the sandbox's audit trail.
 *
 * What a change may do is the apply unit's to decide (src/runtime/policy-apply.ts): on a running
 * sandbox, network and inference take effect at once; a change to a static section is refused and
 * NOT stored (the issue says refused: a stored change would otherwise take effect at the next start
 * the user may not expect, such as a restart after a crash), unless the caller asks for a restart.
 * On a stopped sandbox any valid change is stored, and the sandbox starts with it.
 *
 * Concurrency: between reading the revision a change is based on and storing the next one, nothing
 * here awaits, so two requests cannot interleave in this process; the store's compare-and-swap on
 * the latest revision and on the record's version holds anyway, and a client that sends the
 * revision it based its change on (`baseRev`) gets VERSION_CONFLICT when it is no longer the latest.
 */
import type { Policy } from '../../policy/index.js';
import type { LivePolicy, PolicyProvenance } from '../../runtime/policy-apply.js';
import type { Runtime } from '../../runtime/runtime.js';
import type { SandboxProxy } from '../../proxy/index.js';
import { ApiError } from '../api/errors.js';
import type { Caller } from '../api/router.js';
import type { AuditRouter } from '../audit-router.js';
import type { SandboxLauncher } from '../sandboxes/sandbox-launcher.js';
import type { SandboxService } from '../sandboxes/sandbox-service.js';
import type {
  PolicyRevisionStore,
  RevisionAction,
  RevisionRecord,
  RevisionSource,
} from '../store/policy-revisions.js';
import type { SandboxRecord } from '../store/sandbox-store.js';
import { asApiError, operationOf, type WireOperation } from './policy-wire.js';

type Engine = typeof import('../../policy/index.js');
type ApplyModule = typeof import('../../runtime/policy-apply.js');

export interface ChangeOptions {
  /** The revision the change was based on: refused with VERSION_CONFLICT when no longer the latest. */
  baseRev?: number | undefined;
  /** When the change needs it (a static section on a running sandbox): store it and restart the sandbox. */
  restart?: boolean | undefined;
  /**
   * Where the change comes from when it is not the policy command itself: an approved proposal,
   * or `carapace inference set`. Only the gateway's own services pass it (the routes never do):
   * a request cannot claim to approve a proposal.
   */
  origin?: RevisionOrigin | undefined;
}

export type RevisionOrigin = { source: 'approve'; proposal: number } | { source: 'inference' };

/** A revision as the API shows it. */
export interface RevisionView {
  rev: number;
  hash: string;
  author: number;
  createdAt: string;
  action: RevisionAction;
  effect: 'live' | 'start' | 'restart';
  diff: string[];
  sections: string[];
  restores: number | null;
  source: RevisionSource;
  /** For an approval: the proposal it approved. */
  proposal: number | null;
  /** The latest revision: what the sandbox runs, or starts with. */
  current: boolean;
  text?: string;
}

export interface ChangeResult {
  /** applied: in force now; stored: in force when the sandbox starts; restarted: the sandbox was
   * restarted with it; unchanged: the text is the current one, no revision was made. */
  outcome: 'applied' | 'stored' | 'restarted' | 'unchanged';
  revision: RevisionView;
  /** The proxy's generation now in force, when one was swapped. */
  generation: number | null;
  closedTunnels: number;
}

export interface PolicyServiceOptions {
  sandboxes: SandboxService;
  revisions: PolicyRevisionStore;
  launcher: SandboxLauncher;
  runtime: Runtime;
  audit: AuditRouter;
  /** The gateway's own log. */
  log: (entry: Record<string, unknown>) => void;
}

export class PolicyService {
  /** The policy in force in each running sandbox, by its proxy (a restart makes a new one). */
  private readonly live = new WeakMap<SandboxProxy, LivePolicy>();

  constructor(private readonly opts: PolicyServiceOptions) {}

  /** One revision (the latest without `rev`), with its text. */
  get(caller: Caller, name: string, owner?: number, rev?: number): RevisionView {
    const rec = this.opts.sandboxes.resolve(caller, name, owner);
    const latest = this.latest(rec);
    const found = rev === undefined ? latest : this.opts.revisions.get(rec.id, rev);
    if (!found) {
      throw new ApiError(
        'NOT_FOUND',
        `sandbox ${name} has no policy revision ${rev}: its revisions are 1 to ${latest.rev} (carapace policy history ${name})`,
      );
    }
    return { ...view(found, latest.rev), text: found.text };
  }

  /** Every revision, oldest first, without their texts. */
  history(caller: Caller, name: string, owner?: number): RevisionView[] {
    const rec = this.opts.sandboxes.resolve(caller, name, owner);
    const all = this.opts.revisions.list(rec.id);
    const latest = all.at(-1)?.rev ?? 0;
    return all.map((r) => view(r, latest));
  }

  /** Replaces the policy with `text`. */
  set(
    caller: Caller,
    name: string,
    owner: number | undefined,
    text: string,
    o: ChangeOptions,
  ): Promise<ChangeResult> {
    return this.change(caller, name, owner, o, () => ({ text, action: 'set' }));
  }

  /** Applies operations to the text of the latest revision (its comments kept). */
  update(
    caller: Caller,
    name: string,
    owner: number | undefined,
    operations: WireOperation[],
    o: ChangeOptions,
  ): Promise<ChangeResult> {
    return this.change(caller, name, owner, o, (latest, engine, file) => {
      const ops = operations.map((w) => operationOf(w, engine));
      const edited = engine.applyPolicyOperations(latest.text, file, ops);
      // Operations that change nothing (a preset already there) leave the text as it is.
      return edited.changes.length === 0
        ? { text: latest.text, action: 'update' }
        : { text: edited.text, action: 'update', policy: edited.policy };
    });
  }

  /** Makes a new revision with the text of revision `to`. */
  rollback(
    caller: Caller,
    name: string,
    owner: number | undefined,
    to: number,
    o: ChangeOptions,
  ): Promise<ChangeResult> {
    return this.change(caller, name, owner, o, (latest, _engine, _file, rec) => {
      const old = this.opts.revisions.get(rec.id, to);
      if (!old) {
        throw new ApiError(
          'INVALID_INPUT',
          `sandbox ${name} has no policy revision ${to}: its revisions are 1 to ${latest.rev} (carapace policy history ${name})`,
        );
      }
      return { text: old.text, action: 'rollback', restores: to };
    });
  }

  private async change(
    caller: Caller,
    name: string,
    owner: number | undefined,
    o: ChangeOptions,
    make: (
      latest: RevisionRecord,
      engine: Engine,
      file: string,
      rec: SandboxRecord,
    ) => {
      text: string;
      action: Exclude<RevisionAction, 'create'>;
      restores?: number;
      /** `text` parsed, when making it parsed it (an edit): not parsed again. */
      policy?: Policy;
    },
  ): Promise<ChangeResult> {
    // The only awaits before the change is stored: from here to the store, nothing yields.
    const [engine, apply] = await Promise.all([
      import('../../policy/index.js'),
      import('../../runtime/policy-apply.js'),
    ]);
    const rec = this.opts.sandboxes.resolve(caller, name, owner);
    const latest = this.latest(rec);
    if (o.baseRev !== undefined && o.baseRev !== latest.rev) {
      throw new ApiError(
        'VERSION_CONFLICT',
        `the policy of sandbox ${name} is at revision ${latest.rev}, not ${o.baseRev} (what this change was based on): read it again (carapace policy get ${name}) and retry`,
      );
    }
    const state = this.opts.runtime.get(rec.id)?.state;
    if (state === 'creating' || state === 'stopping') {
      throw new ApiError(
        'SANDBOX_BUSY',
        `sandbox ${name} is ${state === 'creating' ? 'starting' : 'stopping'}: try again in a moment`,
      );
    }
    const file = `${rec.name}.yaml`;
    let made: ReturnType<typeof make>;
    try {
      made = make(latest, engine, file, rec);
    } catch (err) {
      throw asApiError(err, engine);
    }
    if (made.text === latest.text) {
      return { outcome: 'unchanged', revision: view(latest, latest.rev), generation: null, closedTunnels: 0 };
    }
    const live = this.liveFor(rec, latest, engine, apply);
    const proposal = o.origin?.source === 'approve' ? o.origin.proposal : undefined;
    const provenance: PolicyProvenance = {
      source: 'api',
      author: caller.uid,
      action: made.action,
      origin: o.origin?.source,
      proposal,
      revision: latest.rev + 1,
      previousRevision: latest.rev,
      restores: made.restores,
    };
    const plan = live.plan(made.text, file, made.policy);
    if (plan.outcome === 'refused') {
      live.commit(plan, provenance);
      throw new ApiError('POLICY_INVALID', plan.message, plan.diagnostics);
    }
    const restart = plan.outcome === 'needs-restart';
    if (restart && o.restart !== true) {
      live.commit(plan, provenance);
      throw new ApiError(
        'POLICY_NEEDS_RESTART',
        `policy not changed: ${plan.static.join(', ')} cannot change while sandbox ${name} runs (it is fixed when the sandbox starts). ` +
          `Repeat it with --restart to store the change and restart the sandbox with it, or stop the sandbox first (carapace sandbox stop ${name})`,
      );
    }
    // The diff is against the latest stored revision, whatever runs (most often what runs).
    const before = live.revision === latest.rev ? live.current : parsed(latest.text, engine);
    const after = plan.outcome === 'applied' ? plan.policy : parsed(made.text, engine);
    const sections = engine.changedSections(before, after);
    const stored = this.opts.revisions.append(rec, latest.rev, {
      text: made.text,
      authorUid: caller.uid,
      action: made.action,
      source: o.origin?.source ?? made.action,
      proposal,
      effect: restart ? 'restart' : live.running ? 'live' : 'start',
      diff: engine.formatChanges(engine.diffPolicies(before, after)),
      sections: [...sections.static, ...sections.dynamic],
      restores: made.restores,
    });
    this.opts.log({
      level: 'info',
      msg: 'policy revision stored',
      sandbox: rec.name,
      owner: rec.ownerUid,
      revision: stored.revision.rev,
      action: made.action,
      source: stored.revision.source,
      ...(proposal !== undefined ? { proposal } : {}),
      author: caller.uid,
      effect: stored.revision.effect,
    });
    if (!restart) {
      const result = live.commit(plan, provenance);
      const generation = result.outcome === 'applied' ? result.generation : null;
      return {
        outcome: live.running ? 'applied' : 'stored',
        revision: view(stored.revision, stored.revision.rev),
        generation,
        closedTunnels: result.outcome === 'applied' ? result.closedTunnels : 0,
      };
    }
    // Stored for the sandbox's next start, which is now: audited as such, then the restart.
    new apply.LivePolicy({ sandbox: rec.id, current: before, audit: this.opts.audit, target: null }).apply(
      made.text,
      file,
      provenance,
    );
    await this.opts.sandboxes.restart(caller, name, owner);
    return {
      outcome: 'restarted',
      revision: view(stored.revision, stored.revision.rev),
      generation: null,
      closedTunnels: 0,
    };
  }

  private latest(rec: SandboxRecord): RevisionRecord {
    const latest = this.opts.revisions.get(rec.id);
    if (!latest) throw new ApiError('INTERNAL', `sandbox ${rec.name} has no policy revision`);
    return latest;
  }

  /**
   * The policy in force in the sandbox: for a running one, what its proxy runs (the revision it
   * started with, and the live changes since), kept per proxy; for a stopped one, the latest
   * revision, which it will start with.
   */
  private liveFor(
    rec: SandboxRecord,
    latest: RevisionRecord,
    engine: Engine,
    apply: ApplyModule,
  ): LivePolicy {
    const run = this.opts.launcher.get(rec.id);
    const proxy = run?.proxy ?? null;
    if (run && proxy && this.opts.runtime.get(rec.id)?.state === 'running') {
      let live = this.live.get(proxy);
      if (!live) {
        const started =
          run.policyRev === latest.rev ? latest : this.opts.revisions.get(rec.id, run.policyRev)!;
        live = new apply.LivePolicy({
          sandbox: rec.id,
          current: parsed(started.text, engine),
          revision: started.rev,
          audit: this.opts.audit,
          target: proxy,
        });
        this.live.set(proxy, live);
      }
      return live;
    }
    return new apply.LivePolicy({
      sandbox: rec.id,
      current: parsed(latest.text, engine),
      revision: latest.rev,
      audit: this.opts.audit,
      target: null,
    });
  }
}

function view(r: RevisionRecord, latest: number): RevisionView {
  return {
    rev: r.rev,
    hash: r.hash,
    author: r.authorUid,
    createdAt: new Date(r.createdAt).toISOString(),
    action: r.action,
    effect: r.effect,
    diff: r.diff,
    sections: r.sections,
    restores: r.restores,
    source: r.source,
    proposal: r.proposal,
    current: r.rev === latest,
  };
}

/** A stored revision's policy (stored texts were valid when stored). */
function parsed(text: string, engine: Engine): Policy {
  const r = engine.parsePolicy(text, 'stored revision');
  if (!r.ok)
    throw new ApiError('INTERNAL', `a stored policy revision does not parse: ${r.diagnostics[0]?.message}`);
  return r.policy;
}
