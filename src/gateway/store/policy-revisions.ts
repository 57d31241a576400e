/**
 * A sandbox's policy history: every revision ever in force, append-only. A revision records its
 * text, sha256 hash, author (the uid the API's caller was, never a claim in a request), time, what
 * it was (the policy at creation, a set, an update by operations, a rollback and the revision it
 * restores), where it came from (its source: those, or an approved proposal and its id, or
 * `carapace inference set`), how it took effect (live, at the next start, by a restart), and the diff against the
 * revision before it. Rolling back appends a new revision with the old text: history is never
 * rewritten. A revision is read as this version reads it (revisionOf): a form an earlier version
 * stored and this one refuses is read as what it meant then, and the stored row stays as it was.
 *
 * Appending is compare-and-swap twice over, in one transaction: on the latest revision (the one
 * the change was based on: a change based on a stale one is refused, so two writers never lose
 * each other's change) and on the sandbox record's version (the revision in force is part of it).
 */
import type { Database } from './database.js';
import {
  policyHash,
  revisionOf,
  SandboxStoreError,
  type PolicyRevision,
  type SandboxRecord,
  type SandboxStore,
} from './sandbox-store.js';

export type RevisionAction = 'create' | 'set' | 'update' | 'rollback';
/**
 * Where a revision came from: the policy commands (create, set, update, rollback: as its action),
 * an approved proposal (`carapace rules approve`, `approve-all --safe`, the dashboard, `term`), or
 * `carapace inference set`. Set by the gateway's own services, never by a field of a request.
 */
export type RevisionSource = RevisionAction | 'approve' | 'inference';
/** live: swapped into the running sandbox; start: in force when it (next) starts; restart: the
 * sandbox was restarted with it. */
export type RevisionEffect = 'live' | 'start' | 'restart';

export interface RevisionRecord extends PolicyRevision {
  action: RevisionAction;
  effect: RevisionEffect;
  /** One line per change against the revision before (`+ path: value`, `- …`, `~ … → …`). */
  diff: string[];
  /** The top-level sections that changed. */
  sections: string[];
  /** For a rollback: the revision whose text it restores. */
  restores: number | null;
  source: RevisionSource;
  /** For an approval: the proposal it approved (`carapace rules show ID`). */
  proposal: number | null;
}

export interface NewRevision {
  text: string;
  authorUid: number;
  action: Exclude<RevisionAction, 'create'>;
  source: Exclude<RevisionSource, 'create'>;
  proposal?: number | undefined;
  effect: RevisionEffect;
  diff: string[];
  sections: string[];
  restores?: number | undefined;
}

interface Row {
  rev: number;
  text: string;
  hash: string;
  author_uid: number;
  created_at: number;
  action: RevisionAction;
  effect: RevisionEffect;
  diff: string;
  sections: string;
  restores: number | null;
  source: RevisionSource;
  proposal_id: number | null;
}

const fromRow = (r: Row): RevisionRecord => ({
  ...revisionOf(r),
  action: r.action,
  effect: r.effect,
  diff: JSON.parse(r.diff) as string[],
  sections: JSON.parse(r.sections) as string[],
  restores: r.restores === null ? null : Number(r.restores),
  source: r.source,
  proposal: r.proposal_id === null ? null : Number(r.proposal_id),
});

export class PolicyRevisionStore {
  constructor(
    private readonly db: Database,
    private readonly sandboxes: SandboxStore,
  ) {}

  /** One revision (the latest without `rev`). */
  get(id: string, rev?: number): RevisionRecord | null {
    const row =
      rev === undefined
        ? this.db.sql('SELECT * FROM policy_revisions WHERE sandbox_id = ? ORDER BY rev DESC LIMIT 1').get(id)
        : this.db.sql('SELECT * FROM policy_revisions WHERE sandbox_id = ? AND rev = ?').get(id, rev);
    return row ? fromRow(row as unknown as Row) : null;
  }

  /** Every revision, oldest first. */
  list(id: string): RevisionRecord[] {
    return (
      this.db
        .sql('SELECT * FROM policy_revisions WHERE sandbox_id = ? ORDER BY rev')
        .all(id) as unknown as Row[]
    ).map(fromRow);
  }

  /**
   * Appends the next revision and makes it the one in force, if `baseRev` is still the latest
   * revision and `expectedVersion` the record's version; VERSION_CONFLICT otherwise, and nothing
   * is written.
   */
  append(
    rec: SandboxRecord,
    baseRev: number,
    rev: NewRevision,
  ): { record: SandboxRecord; revision: RevisionRecord } {
    return this.db.transaction(() => {
      const latest = this.get(rec.id)?.rev ?? 0;
      if (latest !== baseRev) {
        throw new SandboxStoreError(
          'VERSION_CONFLICT',
          `the policy of sandbox ${rec.name} is at revision ${latest}, not ${baseRev} (what this change was based on): read it again and retry`,
        );
      }
      const next = latest + 1;
      this.db
        .sql(
          `INSERT INTO policy_revisions (sandbox_id, rev, text, hash, author_uid, created_at, action, effect, diff, sections, restores, source, proposal_id)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        )
        .run(
          rec.id,
          next,
          rev.text,
          policyHash(rev.text),
          rev.authorUid,
          Date.now(),
          rev.action,
          rev.effect,
          JSON.stringify(rev.diff),
          JSON.stringify(rev.sections),
          rev.restores ?? null,
          rev.source,
          rev.proposal ?? null,
        );
      const record = this.sandboxes.update(rec.id, { spec: { ...rec.spec, policyRev: next } }, rec.version);
      return { record, revision: this.get(rec.id, next)! };
    });
  }
}
