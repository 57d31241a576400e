/**
 * Providers as the gateway keeps them: one row per (owner, name), the key sealed with the
 * gateway's secret box (AES-256-GCM, bound to `provider/<owner>/<name>` so a sealed key cannot be
 * moved to another provider or user) and a fingerprint that identifies it without revealing it
 * (`sha256:` and the first 12 hex digits of its digest). The key is unsealed only for the router
 * and for `provider test`; no view of a provider carries it.
 */
import { createHash } from 'node:crypto';
import type { ProviderType } from '../../policy/index.js';
import type { Database } from './database.js';
import type { SecretBox } from './secret-box.js';

export interface ProviderRecord {
  ownerUid: number;
  name: string;
  type: ProviderType;
  baseUrl: string;
  /** `sha256:…` of the key, or null when the provider has none. */
  fingerprint: string | null;
  createdAt: number;
  updatedAt: number;
}

interface Row {
  owner_uid: number;
  name: string;
  type: string;
  base_url: string;
  sealed: Uint8Array | null;
  fingerprint: string | null;
  created_at: number;
  updated_at: number;
}

export function keyFingerprint(key: string): string {
  return `sha256:${createHash('sha256').update(key).digest('hex').slice(0, 12)}`;
}

const context = (owner: number, name: string) => `provider/${owner}/${name}`;

function fromRow(r: Row): ProviderRecord {
  return {
    ownerUid: Number(r.owner_uid),
    name: r.name,
    type: r.type as ProviderType,
    baseUrl: r.base_url,
    fingerprint: r.fingerprint,
    createdAt: Number(r.created_at),
    updatedAt: Number(r.updated_at),
  };
}

export class ProviderStore {
  constructor(
    private readonly db: Database,
    private readonly box: SecretBox,
  ) {}

  /** Creates a provider; false when the owner already has one of that name. */
  create(p: {
    ownerUid: number;
    name: string;
    type: ProviderType;
    baseUrl: string;
    key: string | null;
  }): boolean {
    const now = Date.now();
    try {
      this.db
        .sql(
          `INSERT INTO providers (owner_uid, name, type, base_url, sealed, fingerprint, created_at, updated_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
        )
        .run(
          p.ownerUid,
          p.name,
          p.type,
          p.baseUrl,
          p.key === null ? null : this.box.seal(p.key, context(p.ownerUid, p.name)),
          p.key === null ? null : keyFingerprint(p.key),
          now,
          now,
        );
      return true;
    } catch (err) {
      if (/UNIQUE constraint failed/.test((err as Error).message)) return false;
      throw err;
    }
  }

  get(ownerUid: number, name: string): ProviderRecord | null {
    const row = this.db
      .sql('SELECT * FROM providers WHERE owner_uid = ? AND name = ?')
      .get(ownerUid, name) as Row | undefined;
    return row ? fromRow(row) : null;
  }

  /** The provider's key, unsealed (null: it has none; undefined: no such provider). */
  key(ownerUid: number, name: string): string | null | undefined {
    const row = this.db
      .sql('SELECT sealed FROM providers WHERE owner_uid = ? AND name = ?')
      .get(ownerUid, name) as { sealed: Uint8Array | null } | undefined;
    if (row === undefined) return undefined;
    return row.sealed === null ? null : this.box.unseal(row.sealed, context(ownerUid, name));
  }

  list(ownerUid?: number): ProviderRecord[] {
    const rows =
      ownerUid === undefined
        ? this.db.sql('SELECT * FROM providers ORDER BY owner_uid, name').all()
        : this.db.sql('SELECT * FROM providers WHERE owner_uid = ? ORDER BY name').all(ownerUid);
    return (rows as unknown as Row[]).map(fromRow);
  }

  /** Changes a provider; `key`: a new key, null to remove it, undefined to keep it. */
  update(
    ownerUid: number,
    name: string,
    patch: { type?: ProviderType | undefined; baseUrl?: string | undefined; key?: string | null | undefined },
  ): ProviderRecord | null {
    const cur = this.get(ownerUid, name);
    if (cur === null) return null;
    this.db.transaction(() => {
      this.db
        .sql('UPDATE providers SET type = ?, base_url = ?, updated_at = ? WHERE owner_uid = ? AND name = ?')
        .run(patch.type ?? cur.type, patch.baseUrl ?? cur.baseUrl, Date.now(), ownerUid, name);
      if (patch.key !== undefined)
        this.db
          .sql('UPDATE providers SET sealed = ?, fingerprint = ? WHERE owner_uid = ? AND name = ?')
          .run(
            patch.key === null ? null : this.box.seal(patch.key, context(ownerUid, name)),
            patch.key === null ? null : keyFingerprint(patch.key),
            ownerUid,
            name,
          );
    });
    return this.get(ownerUid, name);
  }

  delete(ownerUid: number, name: string): boolean {
    return (
      Number(
        this.db.sql('DELETE FROM providers WHERE owner_uid = ? AND name = ?').run(ownerUid, name).changes,
      ) > 0
    );
  }
}
