/**
 * Optional ed25519 signatures over a blueprint's digest, and the trusted-keys file that says whose
 * signatures count.
 *
 * What is signed is `carapace-blueprint-signature-v1\n<digest>\n`: the digest covers every file,
 * mode and name (digest.ts), the prefix keeps a signature over a digest from being replayed as a
 * signature over anything else the key signs. `blueprint.sig` holds one line per signature:
 * `ed25519 <key id> <base64 signature>`; a key id is the first 16 hex digits of the sha256 of the
 * raw public key. The trusted-keys file holds one line per key: `ed25519 <base64 raw public key>
 * [comment]`, `#` comments allowed.
 *
 * Assumption: the trusted-keys file is the caller's own (in their state directory, or a file they
 * name); a blueprint cannot add keys to it. A signature line that is malformed, or that names a
 * trusted key and does not verify, makes the blueprint refused even when another signature is good:
 * a tampered signature file is tampering.
 */
import {
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  sign,
  verify,
  type KeyObject,
} from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { SIGNATURE_FILE } from './digest.js';
import { BlueprintError } from './errors.js';

const CONTEXT = 'carapace-blueprint-signature-v1\n';
// The DER prefix of an ed25519 SubjectPublicKeyInfo; the raw 32-byte key follows it.
const SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

export interface TrustedKey {
  id: string;
  key: KeyObject;
  comment: string;
}

export interface SignatureCheck {
  /** Key ids of trusted keys whose signatures verified. */
  trustedBy: string[];
  /** Signatures by keys not in the trusted set (not checked: nothing to check them with). */
  unknown: string[];
}

export function keyId(raw: Buffer): string {
  return createHash('sha256').update(raw).digest('hex').slice(0, 16);
}

function rawPublicKey(key: KeyObject): Buffer {
  return key.export({ format: 'der', type: 'spki' }).subarray(SPKI_PREFIX.length);
}

/** A new key pair: the private key as PKCS#8 PEM, the public key as a trusted-keys line. */
export function generateSigningKey(comment: string): { privatePem: string; publicLine: string; id: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const raw = rawPublicKey(publicKey);
  return {
    privatePem: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
    publicLine: `ed25519 ${raw.toString('base64')} ${comment}\n`,
    id: keyId(raw),
  };
}

/** A signature line for `digest` with the PEM private key. */
export function signDigest(digest: string, privatePem: string, file = 'the key'): string {
  let key: KeyObject;
  try {
    key = createPrivateKey(privatePem);
  } catch {
    throw new BlueprintError(
      'KEY_INVALID',
      `${file}: not a private key (carapace blueprint keygen makes one)`,
    );
  }
  if (key.asymmetricKeyType !== 'ed25519')
    throw new BlueprintError(
      'KEY_INVALID',
      `${file}: an ${key.asymmetricKeyType} key; blueprints are signed with ed25519 keys`,
    );
  const raw = rawPublicKey(createPublicKey(key));
  const sig = sign(null, Buffer.from(`${CONTEXT}${digest}\n`), key);
  return `ed25519 ${keyId(raw)} ${sig.toString('base64')}\n`;
}

/** Parses a trusted-keys file; a malformed line is an error naming it (a silently skipped key would be a key not trusted). */
export function parseTrustedKeys(text: string, file: string): TrustedKey[] {
  const keys: TrustedKey[] = [];
  text.split('\n').forEach((line, i) => {
    const t = line.trim();
    if (t === '' || t.startsWith('#')) return;
    const [type, b64, ...rest] = t.split(/\s+/);
    const raw = Buffer.from(b64 ?? '', 'base64');
    if (type !== 'ed25519' || raw.length !== 32 || raw.toString('base64') !== b64)
      throw new BlueprintError(
        'KEY_INVALID',
        `${file}:${i + 1}: not a key line ("ed25519 <base64 public key> [comment]", as carapace blueprint keygen prints)`,
      );
    keys.push({
      id: keyId(raw),
      key: createPublicKey({ key: Buffer.concat([SPKI_PREFIX, raw]), format: 'der', type: 'spki' }),
      comment: rest.join(' '),
    });
  });
  return keys;
}

export function readTrustedKeys(file: string): TrustedKey[] {
  if (!existsSync(file)) return [];
  return parseTrustedKeys(readFileSync(file, 'utf8'), file);
}

/** Checks every signature line of `dir` against `digest` and the trusted keys. */
export function checkSignatures(dir: string, digest: string, trusted: readonly TrustedKey[]): SignatureCheck {
  const file = join(dir, SIGNATURE_FILE);
  const out: SignatureCheck = { trustedBy: [], unknown: [] };
  if (!existsSync(file)) return out;
  const message = Buffer.from(`${CONTEXT}${digest}\n`);
  readFileSync(file, 'utf8')
    .split('\n')
    .forEach((line, i) => {
      const t = line.trim();
      if (t === '') return;
      const [type, id, b64, extra] = t.split(/\s+/);
      const sig = Buffer.from(b64 ?? '', 'base64');
      if (type !== 'ed25519' || !/^[0-9a-f]{16}$/.test(id ?? '') || sig.length !== 64 || extra !== undefined)
        throw new BlueprintError(
          'SIGNATURE_INVALID',
          `${file}:${i + 1}: not a signature line ("ed25519 <key id> <base64 signature>"); refusing the blueprint`,
        );
      const key = trusted.find((k) => k.id === id);
      if (key === undefined) {
        out.unknown.push(id!);
        return;
      }
      if (!verify(null, message, key.key, sig))
        throw new BlueprintError(
          'SIGNATURE_INVALID',
          `${file}:${i + 1}: the signature by trusted key ${id} does not match the blueprint's digest; the blueprint or its signature was changed — refusing it`,
        );
      out.trustedBy.push(id!);
    });
  return out;
}
