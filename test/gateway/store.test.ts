/** The gateway's SQLite store (src/gateway/store/): migrations, records, compare-and-swap, secrets. */
import { chmodSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { describe, expect, it } from 'vitest';
import { Database, MIGRATIONS } from '../../src/gateway/store/database.js';
import { PolicyRevisionStore } from '../../src/gateway/store/policy-revisions.js';
import { policyHash, SandboxStore, type StoredSpec } from '../../src/gateway/store/sandbox-store.js';
import { SecretBox } from '../../src/gateway/store/secret-box.js';

const dir = () => mkdtempSync(join(tmpdir(), 'carapace-store-'));
const spec = (over: Partial<StoredSpec> = {}): StoredSpec => ({
  command: ['sleep', '60'],
  env: {},
  mounts: [],
  workspace: '/w',
  ownWorkspace: true,
  labels: {},
  restart: 'never',
  policyRev: 1,
  credentials: [],
  memoryBytes: null,
  ...over,
});
const record = (id: string, ownerUid: number, name: string) => ({
  id,
  ownerUid,
  name,
  desired: 'running' as const,
  state: 'creating' as const,
  spec: spec(),
  exitCode: null,
  reason: null,
});

describe('gateway store', () => {
  it('migrates a new file to the current schema, in WAL mode, and refuses one from a newer Carapace', () => {
    const path = join(dir(), 'state.db');
    const db = new Database(path);
    expect(db.schemaVersion).toBe(MIGRATIONS.length);
    expect((db.db.prepare('PRAGMA journal_mode').get() as { journal_mode: string }).journal_mode).toBe('wal');
    db.close();
    // Opening again changes nothing.
    new Database(path).close();
    const raw = new DatabaseSync(path);
    raw.exec(`PRAGMA user_version = ${MIGRATIONS.length + 1}`);
    raw.close();
    expect(() => new Database(path)).toThrow(expect.objectContaining({ code: 'STORE_TOO_NEW' }));
  });

  it('keeps names unique per owner, not across owners', () => {
    const store = new SandboxStore(new Database(join(dir(), 'state.db')));
    store.create(record('sb-a1', 1001, 'agent'), 'version: 1\n');
    store.create(record('sb-b1', 1002, 'agent'), 'version: 1\n');
    expect(() => store.create(record('sb-a2', 1001, 'agent'), 'version: 1\n')).toThrow(
      expect.objectContaining({ code: 'SANDBOX_EXISTS' }),
    );
    expect(store.list(1001).map((r) => r.id)).toEqual(['sb-a1']);
    expect(store.list().map((r) => r.id)).toEqual(['sb-a1', 'sb-b1']);
    expect(store.byName(1002, 'agent')?.id).toBe('sb-b1');
    expect(store.policy('sb-a1')).toMatchObject({ rev: 1, text: 'version: 1\n', authorUid: 1001, notes: [] });
  });

  it('refuses a change made against an old version (compare-and-swap)', () => {
    const store = new SandboxStore(new Database(join(dir(), 'state.db')));
    const created = store.create(record('sb-c', 1001, 'c'), 'version: 1\n');
    const a = store.update('sb-c', { desired: 'stopped' }, created.version);
    expect(a.version).toBe(created.version + 1);
    expect(() => store.update('sb-c', { desired: 'running' }, created.version)).toThrow(
      expect.objectContaining({ code: 'VERSION_CONFLICT' }),
    );
    expect(store.get('sb-c')?.desired).toBe('stopped');
  });

  it('keeps forwards unique per host port, and drops everything of a deleted sandbox', () => {
    const store = new SandboxStore(new Database(join(dir(), 'state.db')));
    store.create(record('sb-d', 1001, 'd'), 'version: 1\n');
    store.create(record('sb-e', 1002, 'e'), 'version: 1\n');
    store.addForward('sb-d', { hostPort: 18789, sandboxPort: 18789 });
    expect(() => store.addForward('sb-e', { hostPort: 18789, sandboxPort: 80 })).toThrow(
      expect.objectContaining({ code: 'FORWARD_PORT_TAKEN' }),
    );
    store.putSecret('sb-d', 'TOKEN', new Uint8Array([1, 2, 3]));
    store.delete('sb-d');
    expect(store.forwards('sb-d')).toEqual([]);
    expect(store.secrets('sb-d').size).toBe(0);
    expect(store.policy('sb-d')).toBeNull();
    store.addForward('sb-e', { hostPort: 18789, sandboxPort: 80 });
  });

  it('has each migration set its own schema version, as literal SQL', () => {
    MIGRATIONS.forEach((sql, i) =>
      expect(sql.trimEnd().endsWith(`PRAGMA user_version = ${i + 1};`)).toBe(true),
    );
  });

  it('migrates a schema-1 file with its records: revisions and restarts get their defaults', () => {
    const path = join(dir(), 'state.db');
    const raw = new DatabaseSync(path);
    raw.exec(MIGRATIONS[0]!);
    raw.exec('PRAGMA user_version = 1');
    raw
      .prepare(
        `INSERT INTO sandboxes (id, owner_uid, name, desired, state, spec, version, created_at, updated_at)
         VALUES ('sb-old', 1001, 'old', 'stopped', 'stopped', ?, 1, 1, 1)`,
      )
      .run(JSON.stringify(spec()));
    raw
      .prepare(
        `INSERT INTO policy_revisions (sandbox_id, rev, text, hash, author_uid, created_at) VALUES ('sb-old', 1, 'version: 1\n', 'h', 1001, 1)`,
      )
      .run();
    raw.close();
    const db = new Database(path);
    expect(db.schemaVersion).toBe(MIGRATIONS.length);
    const store = new SandboxStore(db);
    expect(new PolicyRevisionStore(db, store).get('sb-old')).toMatchObject({
      rev: 1,
      authorUid: 1001,
      action: 'create',
      source: 'create',
      proposal: null,
      effect: 'start',
      diff: [],
      sections: [],
      restores: null,
    });
    expect(store.get('sb-old')?.restarts).toBe(0);
  });

  it('migrates a schema-6 file with its whole policy history: its action is its source, an approved proposal its own', () => {
    const path = join(dir(), 'state.db');
    const raw = new DatabaseSync(path);
    for (const m of MIGRATIONS.slice(0, 6)) raw.exec(m);
    expect(Number((raw.prepare('PRAGMA user_version').get() as { user_version: number }).user_version)).toBe(
      6,
    );
    raw
      .prepare(
        `INSERT INTO sandboxes (id, owner_uid, name, desired, state, spec, version, created_at, updated_at)
         VALUES ('sb-six', 1001, 'six', 'stopped', 'stopped', ?, 1, 1, 1)`,
      )
      .run(JSON.stringify(spec({ policyRev: 4 })));
    const insert = raw.prepare(
      `INSERT INTO policy_revisions (sandbox_id, rev, text, hash, author_uid, created_at, action, effect, diff, sections, restores)
       VALUES ('sb-six', ?, ?, ?, ?, ?, ?, ?, ?, '[]', ?)`,
    );
    const rows: [number, string, number, string, string, string, number | null][] = [
      [1, 'version: 1\n', 1001, 'create', 'start', '[]', null],
      [2, 'version: 1\n# b\n', 1001, 'set', 'live', '["~ x"]', null],
      // What an approval wrote before this version: an update like any other.
      [3, 'version: 1\n# c\n', 0, 'update', 'live', '["+ y"]', null],
      [4, 'version: 1\n', 1001, 'rollback', 'live', '["- y"]', 1],
    ];
    for (const [rev, text, author, action, effect, diff, restores] of rows)
      insert.run(rev, text, policyHash(text), author, rev * 1000, action, effect, diff, restores);
    // The proposal approved into revision 3 (its applied revision), by the revision's author; and
    // one approved by someone else that names revision 2 (a set, not an approval's update).
    const proposal = raw.prepare(
      `INSERT INTO proposals (id, sandbox_id, key, status, source, level, host, port, binary, first_seen, last_seen, policy_rev, decided_by, decided_at, applied_rev)
       VALUES (?, 'sb-six', ?, 'approved', 'denial', 'connect', 'b.test', 443, '/usr/bin/curl', 1, 1, 1, ?, 3500, ?)`,
    );
    proposal.run(12, 'k12', 0, 3);
    proposal.run(13, 'k13', 1002, 2);
    raw.close();

    const db = new Database(path);
    expect(db.schemaVersion).toBe(MIGRATIONS.length);
    const store = new SandboxStore(db);
    const revisions = new PolicyRevisionStore(db, store);
    expect(
      revisions
        .list('sb-six')
        .map((r) => [r.rev, r.authorUid, r.createdAt, r.action, r.source, r.proposal, r.diff]),
    ).toEqual([
      [1, 1001, 1000, 'create', 'create', null, []],
      [2, 1001, 2000, 'set', 'set', null, ['~ x']],
      [3, 0, 3000, 'update', 'approve', 12, ['+ y']],
      [4, 1001, 4000, 'rollback', 'rollback', null, ['- y']],
    ]);
    expect(revisions.get('sb-six', 4)?.restores).toBe(1);
    // And it takes new revisions after the old ones, an approval's with its proposal.
    const next = revisions.append(store.get('sb-six')!, 4, {
      text: 'version: 1\n# e\n',
      authorUid: 0,
      action: 'update',
      source: 'approve',
      proposal: 7,
      effect: 'start',
      diff: ['+ z'],
      sections: ['network_policies'],
    });
    expect(next.revision).toMatchObject({ rev: 5, action: 'update', source: 'approve', proposal: 7 });
    db.close();
    // Opened again (already migrated): the same history.
    const again = new Database(path);
    expect(
      new PolicyRevisionStore(again, new SandboxStore(again))
        .list('sb-six')
        .map((r) => [r.source, r.proposal]),
    ).toEqual([
      ['create', null],
      ['set', null],
      ['approve', 12],
      ['rollback', null],
      ['approve', 7],
    ]);
  });

  it('reads a revision an earlier Carapace stored in a form refused now as what it meant, keeping the stored row', () => {
    const db = new Database(join(dir(), 'state.db'));
    const store = new SandboxStore(db);
    const old = 'version: 1\ninference:\n  routes: {}\n';
    store.create(record('sb-legacy', 1001, 'legacy'), old);
    const note =
      'an inference section without routes (routes: {}), accepted before, is read as no inference section: as then, every model call is refused';
    const read = { text: `# carapace: ${note}.\nversion: 1\n`, hash: policyHash(old), notes: [note] };
    expect(store.policy('sb-legacy')).toMatchObject(read);
    expect(new PolicyRevisionStore(db, store).get('sb-legacy', 1)).toMatchObject(read);
    expect(new PolicyRevisionStore(db, store).list('sb-legacy')).toMatchObject([read]);
    const row = db.db.prepare("SELECT text FROM policy_revisions WHERE sandbox_id = 'sb-legacy'").get();
    expect(row).toEqual({ text: old });
  });

  it('appends policy revisions only on the latest one and the current record version', () => {
    const db = new Database(join(dir(), 'state.db'));
    const store = new SandboxStore(db);
    const revisions = new PolicyRevisionStore(db, store);
    const rec = store.create(record('sb-p', 1001, 'p'), 'version: 1\n');
    const change = (text: string) => ({
      text,
      authorUid: 1002,
      action: 'set' as const,
      source: 'set' as const,
      effect: 'start' as const,
      diff: ['~ x'],
      sections: ['network_policies'],
    });
    const first = revisions.append(rec, 1, change('version: 1\n# two\n'));
    expect(first.revision).toMatchObject({ rev: 2, authorUid: 1002, action: 'set', diff: ['~ x'] });
    expect(first.record.spec.policyRev).toBe(2);
    // Based on revision 1, which is no longer the latest: refused, nothing written.
    expect(() => revisions.append(first.record, 1, change('version: 1\n# three\n'))).toThrow(
      expect.objectContaining({ code: 'VERSION_CONFLICT' }),
    );
    // Against a record version that moved on: refused too, and the revision rolled back with it.
    store.update('sb-p', { state: 'running' });
    expect(() => revisions.append(first.record, 2, change('version: 1\n# three\n'))).toThrow(
      expect.objectContaining({ code: 'VERSION_CONFLICT' }),
    );
    expect(revisions.list('sb-p').map((r) => r.rev)).toEqual([1, 2]);
    expect(store.get('sb-p')?.spec.policyRev).toBe(2);
  });

  it('seals secrets with a key of its own, bound to what they are for', () => {
    const d = dir();
    const box = SecretBox.open(join(d, 'secret.key'));
    const sealed = box.seal('s3cret', 'sb-x/TOKEN');
    expect(Buffer.from(sealed).toString('utf8')).not.toContain('s3cret');
    expect(SecretBox.open(join(d, 'secret.key')).unseal(sealed, 'sb-x/TOKEN')).toBe('s3cret');
    expect(() => box.unseal(sealed, 'sb-y/TOKEN')).toThrow();
    const tampered = Buffer.from(sealed);
    tampered[tampered.length - 1]! ^= 1;
    expect(() => box.unseal(tampered, 'sb-x/TOKEN')).toThrow();
    // A key others can read is not used.
    writeFileSync(join(d, 'loose.key'), Buffer.alloc(32));
    chmodSync(join(d, 'loose.key'), 0o644);
    expect(() => SecretBox.open(join(d, 'loose.key'))).toThrow(
      expect.objectContaining({ code: 'SECRET_KEY_INVALID' }),
    );
  });
});
