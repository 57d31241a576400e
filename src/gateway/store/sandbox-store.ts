/**
 * The gateway's records of sandboxes: who owns each, what it runs, whether it should run, what was
 * last seen of it, its policy revisions, forwards and sealed credentials. Every change of a record
 * bumps its `version`; a change made against a version that is no longer current is refused
 * (compare-and-swap), so two clients never overwrite each other unknowingly.
 */
import { createHash } from 'node:crypto';
import { readStoredPolicyText } from '../../policy/index.js';
import type { SandboxState } from '../../runtime/driver.js';
import type { HostMount } from '../../sandbox/spec.js';
import type { Database } from './database.js';

export type RestartPolicy = 'never' | 'on-failure' | 'always';

/** What a sandbox runs: everything needed to start it again, after a stop or a reboot. */
export interface StoredSpec {
  command: string[];
  env: Record<string, string>;
  mounts: HostMount[];
  /** Host directory mounted at /sandbox. */
  workspace: string;
  /** True when the gateway made the workspace (it is removed with the sandbox). */
  ownWorkspace: boolean;
  labels: Record<string, string>;
  restart: RestartPolicy;
  /** The policy revision in force. */
  policyRev: number;
  /** Names of the credentials sealed for it (values in `secrets`). */
  credentials: string[];
  /** The memory limit when its policy sets none (a user's sandbox always has one); null: none. */
  memoryBytes: number | null;
}

export interface SandboxRecord {
  id: string;
  ownerUid: number;
  name: string;
  desired: 'running' | 'stopped';
  state: SandboxState;
  spec: StoredSpec;
  version: number;
  createdAt: number;
  updatedAt: number;
  exitCode: number | null;
  reason: string | null;
  /** How often its restart policy started it again. */
  restarts: number;
}

export interface PolicyRevision {
  rev: number;
  /** The text as this version reads it: as stored, unless an earlier version stored a form that
   * is refused now (src/policy/load/stored-text.ts; then `notes` says what was read differently). */
  text: string;
  /** The sha256 of the text as stored: the revision's identity, whatever `text` reads. */
  hash: string;
  authorUid: number;
  createdAt: number;
  /** What was read differently from the stored text; empty for most revisions. */
  notes: string[];
}

/** A stored revision's columns as a PolicyRevision: its text read as this version reads it. */
export function revisionOf(row: {
  rev: number;
  text: string;
  hash: string;
  author_uid: number;
  created_at: number;
}): PolicyRevision {
  const { text, notes } = readStoredPolicyText(row.text);
  return {
    rev: Number(row.rev),
    text,
    hash: row.hash,
    authorUid: Number(row.author_uid),
    createdAt: Number(row.created_at),
    notes,
  };
}

export interface Forward {
  hostPort: number;
  sandboxPort: number;
}

export class SandboxStoreError extends Error {
  override name = 'SandboxStoreError';
  constructor(
    readonly code: 'SANDBOX_EXISTS' | 'SANDBOX_NOT_FOUND' | 'VERSION_CONFLICT' | 'FORWARD_PORT_TAKEN',
    message: string,
  ) {
    super(message);
  }
}

interface Row {
  id: string;
  owner_uid: number;
  name: string;
  desired: 'running' | 'stopped';
  state: SandboxState;
  spec: string;
  version: number;
  created_at: number;
  updated_at: number;
  exit_code: number | null;
  reason: string | null;
  restarts: number;
}

const fromRow = (r: Row): SandboxRecord => ({
  id: r.id,
  ownerUid: Number(r.owner_uid),
  name: r.name,
  desired: r.desired,
  state: r.state,
  spec: JSON.parse(r.spec) as StoredSpec,
  version: Number(r.version),
  createdAt: Number(r.created_at),
  updatedAt: Number(r.updated_at),
  exitCode: r.exit_code === null ? null : Number(r.exit_code),
  reason: r.reason,
  restarts: Number(r.restarts),
});

const isUnique = (err: unknown) => /UNIQUE constraint failed/.test((err as Error).message);

export function policyHash(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

export class SandboxStore {
  constructor(private readonly db: Database) {}

  create(
    rec: Omit<SandboxRecord, 'version' | 'createdAt' | 'updatedAt' | 'restarts'>,
    policyText: string,
  ): SandboxRecord {
    const now = Date.now();
    try {
      this.db.transaction(() => {
        this.db
          .sql(
            `INSERT INTO sandboxes (id, owner_uid, name, desired, state, spec, version, created_at, updated_at, exit_code, reason)
             VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?)`,
          )
          .run(
            rec.id,
            rec.ownerUid,
            rec.name,
            rec.desired,
            rec.state,
            JSON.stringify(rec.spec),
            now,
            now,
            rec.exitCode,
            rec.reason,
          );
        this.db
          .sql(
            'INSERT INTO policy_revisions (sandbox_id, rev, text, hash, author_uid, created_at) VALUES (?, ?, ?, ?, ?, ?)',
          )
          .run(rec.id, rec.spec.policyRev, policyText, policyHash(policyText), rec.ownerUid, now);
      });
    } catch (err) {
      if (isUnique(err))
        throw new SandboxStoreError('SANDBOX_EXISTS', `you already have a sandbox named "${rec.name}"`);
      throw err;
    }
    return this.get(rec.id)!;
  }

  get(id: string): SandboxRecord | null {
    const row = this.db.sql('SELECT * FROM sandboxes WHERE id = ?').get(id) as Row | undefined;
    return row ? fromRow(row) : null;
  }

  byName(ownerUid: number, name: string): SandboxRecord | null {
    const row = this.db
      .sql('SELECT * FROM sandboxes WHERE owner_uid = ? AND name = ?')
      .get(ownerUid, name) as Row | undefined;
    return row ? fromRow(row) : null;
  }

  /** Every record, or one owner's; ordered by owner, then name. */
  list(ownerUid?: number): SandboxRecord[] {
    const rows =
      ownerUid === undefined
        ? this.db.sql('SELECT * FROM sandboxes ORDER BY owner_uid, name').all()
        : this.db.sql('SELECT * FROM sandboxes WHERE owner_uid = ? ORDER BY name').all(ownerUid);
    return (rows as unknown as Row[]).map(fromRow);
  }

  /** Each record's id and version, in list()'s order: what a list needs to know changed. */
  versions(ownerUid?: number): { id: string; version: number }[] {
    const rows =
      ownerUid === undefined
        ? this.db.sql('SELECT id, version FROM sandboxes ORDER BY owner_uid, name').all()
        : this.db.sql('SELECT id, version FROM sandboxes WHERE owner_uid = ? ORDER BY name').all(ownerUid);
    return (rows as { id: string; version: number }[]).map((r) => ({ id: r.id, version: Number(r.version) }));
  }

  count(ownerUid: number): number {
    return Number(
      (this.db.sql('SELECT COUNT(*) AS n FROM sandboxes WHERE owner_uid = ?').get(ownerUid) as { n: number })
        .n,
    );
  }

  /**
   * Changes a record. With `expected`, only if its version is still that one (compare-and-swap);
   * the new version is returned in the record.
   */
  update(
    id: string,
    patch: Partial<Pick<SandboxRecord, 'desired' | 'state' | 'spec' | 'exitCode' | 'reason' | 'restarts'>>,
    expected?: number,
  ): SandboxRecord {
    const cur = this.get(id);
    if (!cur) throw new SandboxStoreError('SANDBOX_NOT_FOUND', `no sandbox ${id}`);
    const next = { ...cur, ...patch };
    const r = this.db
      .sql(
        `UPDATE sandboxes SET desired = ?, state = ?, spec = ?, exit_code = ?, reason = ?, restarts = ?,
           version = version + 1, updated_at = ?
         WHERE id = ? AND version = ?`,
      )
      .run(
        next.desired,
        next.state,
        JSON.stringify(next.spec),
        next.exitCode,
        next.reason,
        next.restarts,
        Date.now(),
        id,
        expected ?? cur.version,
      );
    if (Number(r.changes) === 0) {
      throw new SandboxStoreError(
        'VERSION_CONFLICT',
        `sandbox ${cur.name} changed meanwhile (version ${this.get(id)?.version ?? '?'}, not ${expected ?? cur.version}): read it again and retry`,
      );
    }
    return this.get(id)!;
  }

  delete(id: string): void {
    this.db.sql('DELETE FROM sandboxes WHERE id = ?').run(id);
  }

  policy(id: string, rev?: number): PolicyRevision | null {
    const row = (
      rev === undefined
        ? this.db.sql('SELECT * FROM policy_revisions WHERE sandbox_id = ? ORDER BY rev DESC LIMIT 1').get(id)
        : this.db.sql('SELECT * FROM policy_revisions WHERE sandbox_id = ? AND rev = ?').get(id, rev)
    ) as Parameters<typeof revisionOf>[0] | undefined;
    return row ? revisionOf(row) : null;
  }

  forwards(id: string): Forward[] {
    return (
      this.db
        .sql('SELECT host_port, sandbox_port FROM forwards WHERE sandbox_id = ? ORDER BY host_port')
        .all(id) as {
        host_port: number;
        sandbox_port: number;
      }[]
    ).map((r) => ({ hostPort: Number(r.host_port), sandboxPort: Number(r.sandbox_port) }));
  }

  /** Every sandbox's forwards in one query (a list of a thousand sandboxes is one read, not 1,000). */
  allForwards(): Map<string, Forward[]> {
    const rows = this.db
      .sql('SELECT sandbox_id, host_port, sandbox_port FROM forwards ORDER BY sandbox_id, host_port')
      .all() as { sandbox_id: string; host_port: number; sandbox_port: number }[];
    const byId = new Map<string, Forward[]>();
    for (const r of rows) {
      const list = byId.get(r.sandbox_id) ?? [];
      list.push({ hostPort: Number(r.host_port), sandboxPort: Number(r.sandbox_port) });
      byId.set(r.sandbox_id, list);
    }
    return byId;
  }

  addForward(id: string, f: Forward): void {
    try {
      this.db
        .sql('INSERT INTO forwards (sandbox_id, host_port, sandbox_port) VALUES (?, ?, ?)')
        .run(id, f.hostPort, f.sandboxPort);
    } catch (err) {
      if (isUnique(err))
        throw new SandboxStoreError('FORWARD_PORT_TAKEN', `host port ${f.hostPort} is already forwarded`);
      throw err;
    }
  }

  removeForward(id: string, hostPort: number): boolean {
    return (
      Number(
        this.db.sql('DELETE FROM forwards WHERE sandbox_id = ? AND host_port = ?').run(id, hostPort).changes,
      ) > 0
    );
  }

  putSecret(id: string, name: string, sealed: Uint8Array): void {
    this.db
      .sql('INSERT OR REPLACE INTO secrets (sandbox_id, name, sealed) VALUES (?, ?, ?)')
      .run(id, name, sealed);
  }

  secrets(id: string): Map<string, Uint8Array> {
    const rows = this.db.sql('SELECT name, sealed FROM secrets WHERE sandbox_id = ?').all(id) as {
      name: string;
      sealed: Uint8Array;
    }[];
    return new Map(rows.map((r) => [r.name, r.sealed]));
  }
}
