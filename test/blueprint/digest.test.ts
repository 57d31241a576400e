/**
 * Blueprint digests and signatures, fail closed: every part of a published blueprint is tampered
 * with (a byte of a file, a mode, a file's name, the digest line, a signature) and each is refused;
 * so are a missing or empty digest, a symlink, and an installed copy changed on disk.
 */
import {
  appendFileSync,
  chmodSync,
  cpSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { computeDigest, DIGEST_FILE, SIGNATURE_FILE, verifyDigest } from '../../src/blueprint/digest.js';
import { BlueprintError } from '../../src/blueprint/errors.js';
import { generateSigningKey, parseTrustedKeys, signDigest } from '../../src/blueprint/signature.js';
import { BlueprintStore, verifyBlueprint, type TrustSettings } from '../../src/blueprint/store.js';

const MANIFEST = `name: demo
version: 1.2.3
min_carapace_version: 0.1.0
description: a test blueprint
agent:
  command: [sleep, infinity]
  files:
    - { path: /sandbox/.demo/config.json, source: files/config.json }
policy:
  base: policy.yaml
`;

function published(): string {
  const dir = mkdtempSync(join(tmpdir(), 'carapace-bp-'));
  writeFileSync(join(dir, 'blueprint.yaml'), MANIFEST);
  writeFileSync(join(dir, 'policy.yaml'), 'version: 1\nnetwork_policies: {}\n');
  mkdirSync(join(dir, 'files'));
  writeFileSync(join(dir, 'files', 'config.json'), '{"model":"{{inference.model}}"}\n');
  writeFileSync(join(dir, DIGEST_FILE), `${computeDigest(dir)}\n`);
  return dir;
}

const open: TrustSettings = { trusted: [], requireSigned: false, carapaceVersion: '0.1.0' };

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(BlueprintError);
    return (err as BlueprintError).code;
  }
  return 'accepted';
}

describe('blueprint digest', () => {
  it('verifies an untouched blueprint, and its digest is stable across copies and umasks', () => {
    const dir = published();
    const digest = verifyDigest(dir);
    expect(digest).toMatch(/^sha256:[0-9a-f]{64}$/);
    const copy = mkdtempSync(join(tmpdir(), 'carapace-bp-'));
    cpSync(dir, copy, { recursive: true });
    chmodSync(join(copy, 'policy.yaml'), 0o664); // another umask: no execute bit, same digest
    expect(computeDigest(copy)).toBe(digest);
  });

  it('refuses a changed byte of a file', () => {
    const dir = published();
    const file = join(dir, 'files', 'config.json');
    const bytes = readFileSync(file);
    bytes[3] = bytes[3]! ^ 1;
    writeFileSync(file, bytes);
    expect(codeOf(() => verifyDigest(dir))).toBe('DIGEST_MISMATCH');
  });

  it('refuses a changed mode (a config file made executable)', () => {
    const dir = published();
    chmodSync(join(dir, 'files', 'config.json'), 0o755);
    expect(codeOf(() => verifyDigest(dir))).toBe('DIGEST_MISMATCH');
  });

  it('refuses a renamed file, and an added one', () => {
    const dir = published();
    renameSync(join(dir, 'files', 'config.json'), join(dir, 'files', 'konfig.json'));
    expect(codeOf(() => verifyDigest(dir))).toBe('DIGEST_MISMATCH');
    const other = published();
    writeFileSync(join(other, 'extra.sh'), 'echo hi\n');
    expect(codeOf(() => verifyDigest(other))).toBe('DIGEST_MISMATCH');
  });

  it('refuses a changed, an empty and a missing digest line', () => {
    const dir = published();
    const line = readFileSync(join(dir, DIGEST_FILE), 'utf8');
    writeFileSync(
      join(dir, DIGEST_FILE),
      line.replace(/[0-9a-f](?=\n)/, (c) => (c === '0' ? '1' : '0')),
    );
    expect(codeOf(() => verifyDigest(dir))).toBe('DIGEST_MISMATCH');
    writeFileSync(join(dir, DIGEST_FILE), '\n');
    expect(codeOf(() => verifyDigest(dir))).toBe('DIGEST_MISSING');
    writeFileSync(join(dir, DIGEST_FILE), 'sha256:\n');
    expect(codeOf(() => verifyDigest(dir))).toBe('DIGEST_MISSING');
    rmSync(join(dir, DIGEST_FILE));
    expect(codeOf(() => verifyDigest(dir))).toBe('DIGEST_MISSING');
  });

  it('refuses a symlink (it could point anywhere on the host)', () => {
    const dir = published();
    symlinkSync('/etc/hostname', join(dir, 'files', 'link'));
    expect(codeOf(() => computeDigest(dir))).toBe('BLUEPRINT_LAYOUT');
  });

  it('a file cannot pass for the next file header (sizes are part of the form)', () => {
    const a = mkdtempSync(join(tmpdir(), 'carapace-bp-'));
    const b = mkdtempSync(join(tmpdir(), 'carapace-bp-'));
    writeFileSync(join(a, 'x'), 'ab');
    writeFileSync(join(a, 'y'), '');
    writeFileSync(join(b, 'x'), 'a');
    writeFileSync(join(b, 'y'), 'b');
    expect(computeDigest(a)).not.toBe(computeDigest(b));
  });
});

describe('blueprint signatures', () => {
  function signed(): { dir: string; trust: TrustSettings } {
    const dir = published();
    const key = generateSigningKey('test');
    writeFileSync(join(dir, SIGNATURE_FILE), signDigest(computeDigest(dir), key.privatePem));
    return {
      dir,
      trust: { ...open, trusted: parseTrustedKeys(key.publicLine, 'keys'), requireSigned: true },
    };
  }

  it('accepts a blueprint signed by a trusted key', () => {
    const { dir, trust } = signed();
    expect(verifyBlueprint(dir, trust).signatures.trustedBy).toHaveLength(1);
  });

  it('refuses a tampered signature, and a signature over another digest', () => {
    const { dir, trust } = signed();
    const line = readFileSync(join(dir, SIGNATURE_FILE), 'utf8').trim().split(' ');
    const sig = Buffer.from(line[2]!, 'base64');
    sig[0] = sig[0]! ^ 1;
    writeFileSync(join(dir, SIGNATURE_FILE), `${line[0]} ${line[1]} ${sig.toString('base64')}\n`);
    expect(codeOf(() => verifyBlueprint(dir, trust))).toBe('SIGNATURE_INVALID');

    // Files and digest line changed together (the digest verifies), the signature is the old one.
    const again = signed();
    appendFileSync(join(again.dir, 'policy.yaml'), '# changed\n');
    writeFileSync(join(again.dir, DIGEST_FILE), `${computeDigest(again.dir)}\n`);
    expect(codeOf(() => verifyBlueprint(again.dir, again.trust))).toBe('SIGNATURE_INVALID');
  });

  it('refuses an unsigned blueprint, or one signed by an unknown key, when a signature is required', () => {
    const dir = published();
    const trust = {
      ...open,
      trusted: parseTrustedKeys(generateSigningKey('x').publicLine, 'keys'),
      requireSigned: true,
    };
    expect(codeOf(() => verifyBlueprint(dir, trust))).toBe('SIGNATURE_UNTRUSTED');
    writeFileSync(
      join(dir, SIGNATURE_FILE),
      signDigest(computeDigest(dir), generateSigningKey('y').privatePem),
    );
    expect(codeOf(() => verifyBlueprint(dir, trust))).toBe('SIGNATURE_UNTRUSTED');
    // Not required: the unknown signature is reported, not trusted.
    expect(verifyBlueprint(dir, open).signatures).toEqual({ trustedBy: [], unknown: [expect.any(String)] });
  });

  it('refuses a malformed trusted-keys line instead of silently trusting fewer keys', () => {
    expect(codeOf(() => parseTrustedKeys('ed25519 notbase64!\n', 'keys'))).toBe('KEY_INVALID');
  });
});

describe('installed blueprints', () => {
  it('are stored by digest, read-only, and verified again at every use', () => {
    const state = mkdtempSync(join(tmpdir(), 'carapace-state-'));
    const store = new BlueprintStore(state);
    const { installed, fresh } = store.install(published(), open);
    expect(fresh).toBe(true);
    expect(installed.dir).toBe(join(state, 'blueprints', installed.digest.replace(':', '-')));
    expect(store.install(published(), open).fresh).toBe(false);
    expect(store.find('demo', open).map((v) => v.digest)).toEqual([installed.digest]);

    // Changed on disk after its install (by root, past the read-only modes): refused, not run.
    const file = join(installed.dir, 'files', 'config.json');
    chmodSync(file, 0o644);
    appendFileSync(file, ' ');
    expect(codeOf(() => store.open(installed.digest, open))).toBe('DIGEST_MISMATCH');
    // A digest line rewritten to match the changed files: the directory name is the digest.
    chmodSync(installed.dir, 0o755);
    chmodSync(join(installed.dir, DIGEST_FILE), 0o644);
    writeFileSync(join(installed.dir, DIGEST_FILE), `${computeDigest(installed.dir)}\n`);
    expect(codeOf(() => store.open(installed.digest, open))).toBe('DIGEST_MISMATCH');
  });

  it('a tampered blueprint is not installed, and leaves nothing in the store', () => {
    const state = mkdtempSync(join(tmpdir(), 'carapace-state-'));
    const dir = published();
    appendFileSync(join(dir, 'blueprint.yaml'), '# tampered\n');
    const store = new BlueprintStore(state);
    expect(codeOf(() => store.install(dir, open))).toBe('DIGEST_MISMATCH');
    expect(store.digests()).toEqual([]);
  });

  it('a blueprint that needs a newer Carapace is refused', () => {
    const dir = published();
    expect(codeOf(() => verifyBlueprint(dir, { ...open, carapaceVersion: '0.0.9' }))).toBe(
      'CARAPACE_TOO_OLD',
    );
  });
});
