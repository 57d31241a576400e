/**
 * The gateway's state: one SQLite file (node:sqlite, docs/dependencies.md) in the gateway's state
 * directory, in WAL mode, with a schema version (`PRAGMA user_version`) and ordered migrations
 * applied in one transaction at open. This module alone touches the driver: Node 26 renames
 * `DatabaseSync`, and a switch to better-sqlite3 would be made here.
 *
 * Durability: `synchronous = FULL` in WAL mode — a committed change (a sandbox created, a policy
 * revision) survives a crash of the gateway or of the host. Writes are small and rare next to what
 * the proxy does; reads never wait for them (WAL).
 */
import { chmodSync, mkdirSync } from 'node:fs';
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import { dirname } from 'node:path';

/**
 * Schema changes, in order; entry n takes the schema from version n to n+1 and ends by setting
 * that version itself, as literal text (a PRAGMA takes no bound parameter, and no SQL here is built
 * from values). Never change one's effect.
 */
export const MIGRATIONS: readonly string[] = [
  `CREATE TABLE sandboxes (
     id TEXT PRIMARY KEY,
     owner_uid INTEGER NOT NULL,
     name TEXT NOT NULL,
     desired TEXT NOT NULL CHECK (desired IN ('running', 'stopped')),
     state TEXT NOT NULL,
     spec TEXT NOT NULL,
     version INTEGER NOT NULL DEFAULT 1,
     created_at INTEGER NOT NULL,
     updated_at INTEGER NOT NULL,
     exit_code INTEGER,
     reason TEXT,
     UNIQUE (owner_uid, name)
   );
   CREATE TABLE policy_revisions (
     sandbox_id TEXT NOT NULL REFERENCES sandboxes (id) ON DELETE CASCADE,
     rev INTEGER NOT NULL,
     text TEXT NOT NULL,
     hash TEXT NOT NULL,
     author_uid INTEGER NOT NULL,
     created_at INTEGER NOT NULL,
     PRIMARY KEY (sandbox_id, rev)
   );
   CREATE TABLE forwards (
     sandbox_id TEXT NOT NULL REFERENCES sandboxes (id) ON DELETE CASCADE,
     host_port INTEGER NOT NULL UNIQUE,
     sandbox_port INTEGER NOT NULL,
     PRIMARY KEY (sandbox_id, host_port)
   );
   CREATE TABLE secrets (
     sandbox_id TEXT NOT NULL REFERENCES sandboxes (id) ON DELETE CASCADE,
     name TEXT NOT NULL,
     sealed BLOB NOT NULL,
     PRIMARY KEY (sandbox_id, name)
   );
   PRAGMA user_version = 1;`,
  // Restart policies (gateway/sandboxes/restart-policy.ts): how often a sandbox was started again.
  `ALTER TABLE sandboxes ADD COLUMN restarts INTEGER NOT NULL DEFAULT 0;
   PRAGMA user_version = 2;`,
  // 3: policy revisions say what they were (create, set, update, rollback), how they took effect
  // (live, at the next start, by a restart), what changed against the one before, and for a
  // rollback which revision they restore.
  `ALTER TABLE policy_revisions ADD COLUMN action TEXT NOT NULL DEFAULT 'create';
   ALTER TABLE policy_revisions ADD COLUMN effect TEXT NOT NULL DEFAULT 'start';
   ALTER TABLE policy_revisions ADD COLUMN diff TEXT NOT NULL DEFAULT '[]';
   ALTER TABLE policy_revisions ADD COLUMN sections TEXT NOT NULL DEFAULT '[]';
   ALTER TABLE policy_revisions ADD COLUMN restores INTEGER;
   PRAGMA user_version = 3;`,
  // 4: the router (src/router): providers per user, their key sealed (store/provider-store.ts), and
  // inference usage per sandbox, route and clock hour (store/usage-store.ts).
  `CREATE TABLE providers (
     owner_uid INTEGER NOT NULL,
     name TEXT NOT NULL,
     type TEXT NOT NULL,
     base_url TEXT NOT NULL,
     sealed BLOB,
     fingerprint TEXT,
     created_at INTEGER NOT NULL,
     updated_at INTEGER NOT NULL,
     PRIMARY KEY (owner_uid, name)
   );
   CREATE TABLE inference_usage (
     sandbox_id TEXT NOT NULL REFERENCES sandboxes (id) ON DELETE CASCADE,
     route TEXT NOT NULL,
     hour INTEGER NOT NULL,
     local INTEGER NOT NULL DEFAULT 0,
     requests INTEGER NOT NULL DEFAULT 0,
     tokens_in INTEGER NOT NULL DEFAULT 0,
     tokens_out INTEGER NOT NULL DEFAULT 0,
     PRIMARY KEY (sandbox_id, route, hour)
   );
   PRAGMA user_version = 4;`,
  // 5: none. Reserved for the blueprints, which needed no table in the end (installed blueprints
  // and images are files, stored by digest); kept as a no-op so the numbers stores have met stay.
  `SELECT 1;
   PRAGMA user_version = 5;`,
  // 6: proposals (gateway/proposals/proposals.ts): denials turned into rules for the operator to approve,
  // deduplicated per sandbox by `key` (host, port, binary, method and path pattern). IF NOT EXISTS:
  // a store that met this migration under another number keeps its table.
  `CREATE TABLE IF NOT EXISTS proposals (
     id INTEGER PRIMARY KEY AUTOINCREMENT,
     sandbox_id TEXT NOT NULL REFERENCES sandboxes (id) ON DELETE CASCADE,
     key TEXT NOT NULL,
     status TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'rejected', 'superseded')),
     source TEXT NOT NULL CHECK (source IN ('denial', 'agent')),
     level TEXT NOT NULL CHECK (level IN ('connect', 'request')),
     host TEXT NOT NULL,
     port INTEGER NOT NULL,
     binary TEXT NOT NULL,
     ancestors TEXT NOT NULL DEFAULT '[]',
     method TEXT,
     path_pattern TEXT,
     hits INTEGER NOT NULL DEFAULT 0,
     first_seen INTEGER NOT NULL,
     last_seen INTEGER NOT NULL,
     samples TEXT NOT NULL DEFAULT '[]',
     policy_rev INTEGER NOT NULL,
     rationale TEXT,
     decided_by INTEGER,
     decided_at INTEGER,
     quiet_until INTEGER,
     applied_rev INTEGER,
     outcome TEXT
   );
   CREATE INDEX IF NOT EXISTS proposals_by_key ON proposals (sandbox_id, key, status);
   PRAGMA user_version = 6;`,
  // 7: where a policy revision came from (its source): create, set, update and rollback as its
  // action says; approve, an approved proposal (with its id); inference, `carapace inference set`.
  // A revision stored before says what its action says, except that an approval then was stored as
  // an update: an update is read as the approval whose proposal names it as its applied revision,
  // decided by the revision's author, when exactly one does (docs/gateway.md, "Policy revisions").
  `ALTER TABLE policy_revisions ADD COLUMN source TEXT NOT NULL DEFAULT 'create';
   ALTER TABLE policy_revisions ADD COLUMN proposal_id INTEGER;
   UPDATE policy_revisions SET source = action;
   UPDATE policy_revisions
      SET source = 'approve',
          proposal_id = (SELECT p.id FROM proposals p
                          WHERE p.sandbox_id = policy_revisions.sandbox_id AND p.status = 'approved'
                            AND p.applied_rev = policy_revisions.rev)
    WHERE action = 'update'
      AND (SELECT count(*) FROM proposals p
            WHERE p.sandbox_id = policy_revisions.sandbox_id AND p.status = 'approved'
              AND p.applied_rev = policy_revisions.rev AND p.decided_by = policy_revisions.author_uid) = 1
      AND (SELECT count(*) FROM proposals p
            WHERE p.sandbox_id = policy_revisions.sandbox_id AND p.status = 'approved'
              AND p.applied_rev = policy_revisions.rev) = 1;
   PRAGMA user_version = 7;`,
];

export class StoreError extends Error {
  override name = 'StoreError';
  constructor(
    readonly code: 'STORE_TOO_NEW' | 'STORE_UNAVAILABLE' | 'STORE_MIGRATION',
    message: string,
  ) {
    super(message);
  }
}

export class Database {
  readonly db: DatabaseSync;
  private readonly statements = new Map<string, StatementSync>();

  constructor(readonly path: string) {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    try {
      this.db = new DatabaseSync(path, { enableForeignKeyConstraints: true, timeout: 5_000 });
    } catch (err) {
      throw new StoreError(
        'STORE_UNAVAILABLE',
        `cannot open the gateway's state ${path}: ${(err as Error).message}`,
      );
    }
    chmodSync(path, 0o600);
    this.db.exec('PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;');
    this.migrate();
  }

  get schemaVersion(): number {
    return Number((this.db.prepare('PRAGMA user_version').get() as { user_version: number }).user_version);
  }

  private migrate(): void {
    const from = this.schemaVersion;
    if (from > MIGRATIONS.length) {
      throw new StoreError(
        'STORE_TOO_NEW',
        `${this.path} has schema version ${from}, newer than this Carapace knows (${MIGRATIONS.length}): run the Carapace that wrote it, or a newer one`,
      );
    }
    if (from === MIGRATIONS.length) return;
    this.transaction(() => {
      for (let v = from; v < MIGRATIONS.length; v++) {
        this.db.exec(MIGRATIONS[v]!);
        if (this.schemaVersion !== v + 1) {
          throw new StoreError(
            'STORE_MIGRATION',
            `migration ${v + 1} did not set the schema version to ${v + 1}`,
          );
        }
      }
    });
  }

  /** A prepared statement, prepared once. */
  sql(text: string): StatementSync {
    let st = this.statements.get(text);
    if (!st) {
      st = this.db.prepare(text);
      this.statements.set(text, st);
    }
    return st;
  }

  /** Runs `fn` in one transaction (BEGIN IMMEDIATE: writers queue, readers never wait). */
  transaction<T>(fn: () => T): T {
    this.db.exec('BEGIN IMMEDIATE');
    try {
      const result = fn();
      this.db.exec('COMMIT');
      return result;
    } catch (err) {
      this.db.exec('ROLLBACK');
      throw err;
    }
  }

  close(): void {
    this.db.close();
  }
}
