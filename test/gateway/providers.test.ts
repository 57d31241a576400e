/**
 * Providers in the gateway (src/gateway/inference/provider-service.ts, store/provider-store.ts): per user,
 * keys sealed and shown only as fingerprints, a sandbox resolving its owner's providers only, bad
 * input refused with one line and nothing stored; usage rows that add up and go with their sandbox.
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ProviderService } from '../../src/gateway/inference/provider-service.js';
import { Database } from '../../src/gateway/store/database.js';
import { ProviderStore, keyFingerprint } from '../../src/gateway/store/provider-store.js';
import { SandboxStore } from '../../src/gateway/store/sandbox-store.js';
import { SecretBox } from '../../src/gateway/store/secret-box.js';
import { SqliteUsageStore } from '../../src/gateway/store/usage-store.js';

const ALICE = { uid: 1001, admin: false };
const BOB = { uid: 1002, admin: false };
const ROOT = { uid: 0, admin: true };
const KEY_A = 'sk-alice-secret-key-0123456789abcdef';
const KEY_B = 'sk-bob-secret-key-fedcba9876543210';

function setup() {
  const dir = mkdtempSync(join(tmpdir(), 'carapace-providers-'));
  const db = new Database(join(dir, 'gateway.db'));
  const secrets = SecretBox.open(join(dir, 'secret.key'));
  const sandboxes = new SandboxStore(db);
  const service = new ProviderService({ providers: new ProviderStore(db, secrets), sandboxes, secrets });
  const sandbox = (id: string, ownerUid: number) =>
    sandboxes.create(
      {
        id,
        ownerUid,
        name: id,
        desired: 'running',
        state: 'creating',
        spec: {
          command: ['true'],
          env: {},
          mounts: [],
          workspace: '/w',
          ownWorkspace: true,
          labels: {},
          restart: 'never',
          policyRev: 1,
          credentials: [],
          memoryBytes: null,
        },
        exitCode: null,
        reason: null,
      },
      'version: 1\n',
    );
  return { dir, db, service, sandboxes, sandbox };
}

describe('providers', () => {
  it('a sandbox uses its owner’s providers only; another user’s of the same name is not found', async () => {
    const { service, sandbox } = setup();
    service.create(ALICE, { name: 'cloud', type: 'openai', credential: KEY_A });
    service.create(BOB, {
      name: 'cloud',
      type: 'openai-compatible',
      baseUrl: 'http://127.0.0.1:9/v1',
      credential: KEY_B,
    });
    service.create(ALICE, { name: 'alice-only', type: 'ollama' });
    sandbox('sb-alice', ALICE.uid);
    sandbox('sb-bob', BOB.uid);
    const dir = service.directory();
    expect(await dir.named('sb-alice', 'cloud')).toMatchObject({ type: 'openai', apiKey: KEY_A });
    expect(await dir.named('sb-bob', 'cloud')).toMatchObject({ type: 'openai-compatible', apiKey: KEY_B });
    expect(await dir.named('sb-bob', 'alice-only')).toBeNull();
    expect(await dir.named('sb-gone', 'cloud')).toBeNull();
    // Bob cannot see, test, change or delete alice's provider, nor claim to be her.
    expect(() => service.get(BOB, 'alice-only')).toThrow(
      expect.objectContaining({ code: 'PROVIDER_NOT_FOUND' }),
    );
    expect(() => service.delete(BOB, 'alice-only')).toThrow(
      expect.objectContaining({ code: 'PROVIDER_NOT_FOUND' }),
    );
    expect(() => service.get(BOB, 'alice-only', ALICE.uid)).toThrow(
      expect.objectContaining({ code: 'FORBIDDEN' }),
    );
    expect(() => service.list(BOB, true)).toThrow(expect.objectContaining({ code: 'FORBIDDEN' }));
    expect(service.list(BOB, false).map((p) => p.name)).toEqual(['cloud']);
    // Root, an admin, sees and manages both.
    expect(service.list(ROOT, true).map((p) => `${p.ownerUid}/${p.name}`)).toEqual([
      '1001/alice-only',
      '1001/cloud',
      '1002/cloud',
    ]);
    expect(service.get(ROOT, 'alice-only', ALICE.uid).name).toBe('alice-only');
  });

  it('seals keys at rest and shows fingerprints; a rotated key has a new one', () => {
    const { dir, db, service } = setup();
    const rec = service.create(ALICE, { name: 'cloud', type: 'anthropic', credential: KEY_A });
    const view = service.view(rec);
    expect(view).toMatchObject({
      name: 'cloud',
      type: 'anthropic',
      baseUrl: 'https://api.anthropic.com',
      fingerprint: keyFingerprint(KEY_A),
    });
    expect(JSON.stringify(view)).not.toContain(KEY_A);
    db.db.exec('PRAGMA wal_checkpoint(TRUNCATE)');
    expect(readFileSync(join(dir, 'gateway.db')).toString('latin1')).not.toContain(KEY_A);
    const rotated = service.update(ALICE, 'cloud', { credential: KEY_B });
    expect(rotated.fingerprint).toBe(keyFingerprint(KEY_B));
    expect(service.config(rotated).apiKey).toBe(KEY_B);
    // A sealed key is bound to its owner and name: moved to another row it does not open.
    db.db.exec(
      `INSERT INTO providers SELECT 1002, 'stolen', type, base_url, sealed, fingerprint, created_at, updated_at FROM providers WHERE owner_uid = 1001`,
    );
    expect(() => service.config(service.get(BOB, 'stolen'))).toThrow();
  });

  it('a new type keeps the base URL and key together: never sends a stored key to another host unasked', () => {
    const { service } = setup();
    // A custom endpoint keeps its URL when only the type changes (a vLLM behind an
    // openai-compatible provider, say).
    service.create(ALICE, {
      name: 'mine',
      type: 'openai-compatible',
      baseUrl: 'http://127.0.0.1:9/v1',
      credential: KEY_A,
    });
    const retyped = service.update(ALICE, 'mine', { type: 'vllm' });
    expect(retyped).toMatchObject({ type: 'vllm', baseUrl: 'http://127.0.0.1:9/v1' });
    expect(service.update(ALICE, 'mine', { type: 'anthropic' })).toMatchObject({
      type: 'anthropic',
      baseUrl: 'http://127.0.0.1:9/v1',
    });
    // A provider at its type's default service: another type's default would take the stored
    // key to another company's API. Refused, one line, unchanged; with the new key it moves.
    const cloud = service.create(ALICE, { name: 'cloud', type: 'openai', credential: KEY_A });
    let err: Error | null = null;
    try {
      service.update(ALICE, 'cloud', { type: 'anthropic' });
    } catch (e) {
      err = e as Error;
    }
    expect(err).toMatchObject({ code: 'INVALID_INPUT' });
    expect(err!.message).toMatch(/https:\/\/api\.anthropic\.com/);
    expect(err!.message).toMatch(/--credential-env/);
    expect(err!.message.split('\n')).toHaveLength(1);
    expect(service.get(ALICE, 'cloud')).toMatchObject({
      type: 'openai',
      baseUrl: 'https://api.openai.com/v1',
      fingerprint: cloud.fingerprint,
    });
    expect(service.update(ALICE, 'cloud', { type: 'anthropic', credential: KEY_B })).toMatchObject({
      type: 'anthropic',
      baseUrl: 'https://api.anthropic.com',
      fingerprint: keyFingerprint(KEY_B),
    });
    // A base URL given with the type is taken as given.
    expect(
      service.update(ALICE, 'cloud', { type: 'nvidia', baseUrl: 'https://api.anthropic.com' }),
    ).toMatchObject({ type: 'nvidia', baseUrl: 'https://api.anthropic.com' });
  });

  it('refuses bad input with one line and stores nothing', () => {
    const { service } = setup();
    const bad: [Parameters<ProviderService['create']>[1], RegExp][] = [
      [{ name: 'Bad Name', type: 'ollama' }, /not a provider name/],
      [{ name: 'a'.repeat(64), type: 'ollama' }, /is not a provider name: .*at most 63/],
      [{ name: 'x', type: 'openai' }, /needs a key: --credential-env VAR/],
      [{ name: 'x', type: 'openai-compatible', credential: 'k' }, /needs --base-url/],
      [{ name: 'x', type: 'vllm', baseUrl: 'ftp://h/v1' }, /must be http or https/],
      [{ name: 'x', type: 'vllm', baseUrl: 'http://user:pw@h/v1' }, /must not carry credentials/],
      [{ name: 'x', type: 'openai', credential: 'a\nb' }, /one line/],
    ];
    for (const [input, message] of bad) {
      let err: Error | null = null;
      try {
        service.create(ALICE, input);
      } catch (e) {
        err = e as Error;
      }
      expect(err?.message).toMatch(message);
      expect(err?.message.split('\n')).toHaveLength(1);
    }
    expect(service.list(ALICE, false)).toEqual([]);
    service.create(ALICE, { name: 'x', type: 'ollama' });
    expect(() => service.create(ALICE, { name: 'x', type: 'ollama' })).toThrow(
      expect.objectContaining({ code: 'PROVIDER_EXISTS' }),
    );
  });

  it('adds usage per sandbox, route and hour, and drops the rows of a deleted sandbox', () => {
    const { db, sandboxes, sandbox } = setup();
    const usage = new SqliteUsageStore(db);
    sandbox('sb-1', 1001);
    const row = {
      sandbox: 'sb-1',
      route: 'cloud',
      hour: 100,
      local: false,
      requests: 1,
      tokensIn: 10,
      tokensOut: 5,
    };
    usage.add([row, row, { ...row, hour: 101 }, { ...row, sandbox: 'sb-gone' }]);
    expect(usage.load('sb-1', 0)).toEqual([
      { ...row, requests: 2, tokensIn: 20, tokensOut: 10 },
      { ...row, hour: 101 },
    ]);
    expect(usage.load('sb-gone', 0)).toEqual([]);
    expect(usage.summary('sb-1', 101)).toEqual([
      expect.objectContaining({
        route: 'cloud',
        hour: { requests: 1, tokensIn: 10, tokensOut: 5 },
        total: { requests: 3, tokensIn: 30, tokensOut: 15 },
      }),
    ]);
    sandboxes.delete('sb-1');
    expect(usage.load('sb-1', 0)).toEqual([]);
  });
});
