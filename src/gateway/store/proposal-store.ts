/**
 * Proposals at rest (migration 6): one row per distinct denial of a sandbox (its `key`: host,
 * port, binary, method and path pattern), with its hits, first and last time seen, up to
 * SAMPLE_LIMIT redacted samples, the policy revision it was last seen under, and the operator's
 * decision. Rows go with their sandbox (ON DELETE CASCADE).
 */
import type { Database } from './database.js';

export type ProposalStatus = 'pending' | 'approved' | 'rejected' | 'superseded';

export interface ProposalSample {
  /** Unix milliseconds. */
  t: number;
  method?: string | undefined;
  /** Redacted path (proposal-rules.ts). */
  path?: string | undefined;
}

export interface ProposalRecord {
  id: number;
  sandboxId: string;
  key: string;
  status: ProposalStatus;
  source: 'denial' | 'agent';
  level: 'connect' | 'request';
  host: string;
  port: number;
  binary: string;
  ancestors: string[];
  method: string | null;
  pathPattern: string | null;
  hits: number;
  firstSeen: number;
  lastSeen: number;
  samples: ProposalSample[];
  policyRev: number;
  rationale: string | null;
  decidedBy: number | null;
  decidedAt: number | null;
  quietUntil: number | null;
  appliedRev: number | null;
  outcome: string | null;
  /** The last IP the host resolved to (not stored: the live denial's, for risk notes). */
  ip?: string | undefined;
}

export const SAMPLE_LIMIT = 8;

interface Row {
  id: number;
  sandbox_id: string;
  key: string;
  status: ProposalStatus;
  source: 'denial' | 'agent';
  level: 'connect' | 'request';
  host: string;
  port: number;
  binary: string;
  ancestors: string;
  method: string | null;
  path_pattern: string | null;
  hits: number;
  first_seen: number;
  last_seen: number;
  samples: string;
  policy_rev: number;
  rationale: string | null;
  decided_by: number | null;
  decided_at: number | null;
  quiet_until: number | null;
  applied_rev: number | null;
  outcome: string | null;
}

const n = (v: number | null): number | null => (v === null ? null : Number(v));

const fromRow = (r: Row): ProposalRecord => ({
  id: Number(r.id),
  sandboxId: r.sandbox_id,
  key: r.key,
  status: r.status,
  source: r.source,
  level: r.level,
  host: r.host,
  port: Number(r.port),
  binary: r.binary,
  ancestors: JSON.parse(r.ancestors) as string[],
  method: r.method,
  pathPattern: r.path_pattern,
  hits: Number(r.hits),
  firstSeen: Number(r.first_seen),
  lastSeen: Number(r.last_seen),
  samples: JSON.parse(r.samples) as ProposalSample[],
  policyRev: Number(r.policy_rev),
  rationale: r.rationale,
  decidedBy: n(r.decided_by),
  decidedAt: n(r.decided_at),
  quietUntil: n(r.quiet_until),
  appliedRev: n(r.applied_rev),
  outcome: r.outcome,
});

export type NewProposal = Omit<
  ProposalRecord,
  'id' | 'status' | 'decidedBy' | 'decidedAt' | 'quietUntil' | 'appliedRev' | 'outcome'
>;

export class ProposalStore {
  constructor(private readonly db: Database) {}

  get(id: number): ProposalRecord | null {
    const row = this.db.sql('SELECT * FROM proposals WHERE id = ?').get(id);
    return row ? fromRow(row as unknown as Row) : null;
  }

  /**
   * The proposal a new denial with `key` belongs to: the pending one, or a rejected one still in
   * its quiet period (`quiet_until` null: for good). Null: the denial opens a new proposal.
   */
  open(sandboxId: string, key: string, now: number): ProposalRecord | null {
    const row = this.db
      .sql(
        `SELECT * FROM proposals WHERE sandbox_id = ? AND key = ?
           AND (status = 'pending' OR (status = 'rejected' AND (quiet_until IS NULL OR quiet_until > ?)))
         ORDER BY id DESC LIMIT 1`,
      )
      .get(sandboxId, key, now);
    return row ? fromRow(row as unknown as Row) : null;
  }

  insert(p: NewProposal): ProposalRecord {
    const r = this.db
      .sql(
        `INSERT INTO proposals (sandbox_id, key, status, source, level, host, port, binary, ancestors, method,
           path_pattern, hits, first_seen, last_seen, samples, policy_rev, rationale)
         VALUES (?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      )
      .run(
        p.sandboxId,
        p.key,
        p.source,
        p.level,
        p.host,
        p.port,
        p.binary,
        JSON.stringify(p.ancestors),
        p.method,
        p.pathPattern,
        p.hits,
        p.firstSeen,
        p.lastSeen,
        JSON.stringify(p.samples.slice(-SAMPLE_LIMIT)),
        p.policyRev,
        p.rationale,
      );
    return this.get(Number(r.lastInsertRowid))!;
  }

  /** More hits of an open proposal. */
  hit(
    id: number,
    u: { hits: number; lastSeen: number; samples: ProposalSample[]; policyRev: number; ancestors: string[] },
  ): void {
    this.db
      .sql(
        'UPDATE proposals SET hits = hits + ?, last_seen = ?, samples = ?, policy_rev = ?, ancestors = ? WHERE id = ?',
      )
      .run(
        u.hits,
        u.lastSeen,
        JSON.stringify(u.samples.slice(-SAMPLE_LIMIT)),
        u.policyRev,
        JSON.stringify(u.ancestors),
        id,
      );
  }

  /** An agent's rationale (policy.local), kept with the proposal. */
  setRationale(id: number, rationale: string): void {
    this.db.sql('UPDATE proposals SET rationale = ? WHERE id = ?').run(rationale, id);
  }

  /**
   * The operator's decision, if the proposal is still `from` (compare-and-swap on the status: two
   * operators deciding at once never both win). False when it was decided meanwhile.
   */
  decide(
    id: number,
    from: ProposalStatus,
    d: {
      status: ProposalStatus;
      by: number;
      at: number;
      quietUntil?: number | null;
      appliedRev?: number | null;
      outcome: string;
    },
  ): boolean {
    const r = this.db
      .sql(
        `UPDATE proposals SET status = ?, decided_by = ?, decided_at = ?, quiet_until = ?, applied_rev = ?, outcome = ?
         WHERE id = ? AND status = ?`,
      )
      .run(d.status, d.by, d.at, d.quietUntil ?? null, d.appliedRev ?? null, d.outcome, id, from);
    return Number(r.changes) === 1;
  }

  /** Proposals of these sandboxes, newest first: pending ones, decided ones, or all. */
  list(sandboxIds: readonly string[], which: 'pending' | 'decided' | 'all', limit = 500): ProposalRecord[] {
    if (sandboxIds.length === 0) return [];
    const marks = sandboxIds.map(() => '?').join(', ');
    const status =
      which === 'pending' ? "AND status = 'pending'" : which === 'decided' ? "AND status != 'pending'" : '';
    const order = which === 'decided' ? 'decided_at DESC, id DESC' : 'last_seen DESC, id DESC';
    return (
      this.db
        .sql(
          `SELECT * FROM proposals WHERE sandbox_id IN (${marks}) ${status} ORDER BY ${order} LIMIT ${limit}`,
        )
        .all(...sandboxIds) as unknown as Row[]
    ).map(fromRow);
  }

  transaction<T>(fn: () => T): T {
    return this.db.transaction(fn);
  }
}
