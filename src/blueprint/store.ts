/**
 * Installed blueprints: `<state>/blueprints/sha256-<hex>/`, one directory per digest, made
 * read-only, never changed in place (a new version is a new digest beside it). The directory name
 * is the digest its files must still have: every use verifies them again (`openInstalled`), so a
 * blueprint changed on disk after its install is refused, not run.
 *
 * An install copies into a staging directory on the same filesystem, verifies the copy (the
 * source could change while it is read), and renames it into place: a failed or interrupted
 * install leaves no directory under a digest name.
 */
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  cpSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  renameSync,
  rmSync,
} from 'node:fs';
import { join } from 'node:path';
import { computeDigest, DIGEST_FILE, digestDirName, verifyDigest } from './digest.js';
import { BlueprintError } from './errors.js';
import { checkCarapaceVersion, loadBlueprintManifest } from './manifest.js';
import { compareVersions, type Blueprint } from './schema.js';
import { checkSignatures, type SignatureCheck, type TrustedKey } from './signature.js';

export interface VerifiedBlueprint {
  dir: string;
  digest: string;
  blueprint: Blueprint;
  signatures: SignatureCheck;
}

export interface TrustSettings {
  trusted: readonly TrustedKey[];
  /** Refuse a blueprint no trusted key signed (the default when the caller trusts any key). */
  requireSigned: boolean;
  /** Digests that need no signature: the built-in blueprints (catalog.ts, isBuiltinDigest). */
  exempt?: ((digest: string) => boolean) | undefined;
  /** The running Carapace's version (min_carapace_version). */
  carapaceVersion: string;
}

/** Verifies a blueprint directory: its digest, its signatures, its manifest. Fail closed. */
export function verifyBlueprint(dir: string, trust: TrustSettings, label = dir): VerifiedBlueprint {
  const digest = verifyDigest(dir);
  const signatures = checkSignatures(dir, digest, trust.trusted);
  if (trust.requireSigned && signatures.trustedBy.length === 0 && trust.exempt?.(digest) !== true)
    throw new BlueprintError(
      'SIGNATURE_UNTRUSTED',
      `${label}: no trusted key signed this blueprint${signatures.unknown.length > 0 ? ` (signed by unknown key ${signatures.unknown.join(', ')})` : ''}; add its author's key to your trusted keys, or refuse it`,
    );
  const { blueprint } = loadBlueprintManifest(dir, label);
  checkCarapaceVersion(blueprint, trust.carapaceVersion);
  return { dir, digest, blueprint, signatures };
}

export class BlueprintStore {
  readonly root: string;
  constructor(stateDir: string) {
    this.root = join(stateDir, 'blueprints');
  }

  /** Installs (or finds installed) the blueprint in `source`; returns the installed copy, verified. */
  install(source: string, trust: TrustSettings): { installed: VerifiedBlueprint; fresh: boolean } {
    const checked = verifyBlueprint(source, trust);
    const target = join(this.root, digestDirName(checked.digest));
    if (existsSync(target)) return { installed: this.open(checked.digest, trust), fresh: false };
    mkdirSync(this.root, { recursive: true, mode: 0o755 });
    const staging = join(this.root, `.staging-${randomBytes(6).toString('hex')}`);
    try {
      cpSync(source, staging, { recursive: true, dereference: false, errorOnExist: true, force: false });
      const copied = computeDigest(staging);
      if (copied !== checked.digest)
        throw new BlueprintError(
          'DIGEST_MISMATCH',
          `${source}: the blueprint changed while it was installed; try again`,
        );
      makeReadOnly(staging);
      renameSync(staging, target);
    } catch (err) {
      rmTree(staging);
      throw err;
    }
    return { installed: this.open(checked.digest, trust), fresh: true };
  }

  /** The installed blueprint of this digest, verified again now. */
  open(digest: string, trust: TrustSettings): VerifiedBlueprint {
    const dir = join(this.root, digestDirName(digest));
    if (!existsSync(dir)) throw new BlueprintError('BLUEPRINT_NOT_FOUND', `no installed blueprint ${digest}`);
    const verified = verifyBlueprint(dir, trust, `installed blueprint ${digest}`);
    if (verified.digest !== digest)
      throw new BlueprintError(
        'DIGEST_MISMATCH',
        `installed blueprint ${digest}: its files now have digest ${verified.digest}; remove and install it again`,
      );
    return verified;
  }

  /** Every installed digest (not verified: `open` each to use it). */
  digests(): string[] {
    if (!existsSync(this.root)) return [];
    return readdirSync(this.root)
      .filter((n) => /^sha256-[0-9a-f]{64}$/.test(n))
      .map((n) => n.replace('-', ':'))
      .sort();
  }

  /** Installed blueprints by name or digest (or digest prefix); verified. Newest version first. */
  find(ref: string, trust: TrustSettings): VerifiedBlueprint[] {
    const out: VerifiedBlueprint[] = [];
    for (const digest of this.digests()) {
      const byDigest = ref.startsWith('sha256:') && digest.startsWith(ref) && ref.length >= 15;
      if (byDigest) {
        out.push(this.open(digest, trust));
        continue;
      }
      if (ref.startsWith('sha256:')) continue;
      const info = this.peekName(digest);
      if (info === ref) out.push(this.open(digest, trust));
    }
    return out.sort((a, b) => compareVersions(b.blueprint.version, a.blueprint.version));
  }

  /** The name an installed blueprint declares, read without verifying (to filter before `open`). */
  peekName(digest: string): string | null {
    return this.peek(digest)?.name ?? null;
  }

  /** What an installed blueprint declares, read without verifying; null when it cannot be read. */
  peek(digest: string): Blueprint | null {
    try {
      return loadBlueprintManifest(join(this.root, digestDirName(digest))).blueprint;
    } catch {
      return null;
    }
  }

  /** Removes an installed blueprint (its files only; agent images are removed with their sandboxes' blueprint). */
  remove(digest: string): void {
    const dir = join(this.root, digestDirName(digest));
    if (!existsSync(join(dir, DIGEST_FILE)) && !existsSync(dir))
      throw new BlueprintError('BLUEPRINT_NOT_FOUND', `no installed blueprint ${digest}`);
    rmTree(dir);
  }
}

/** Files 0444 (0555 when executable), directories 0555: nothing in it is written again. */
export function makeReadOnly(dir: string): void {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    const st = lstatSync(path);
    if (st.isDirectory()) makeReadOnly(path);
    else if (st.isFile()) chmodSync(path, (st.mode & 0o111) !== 0 ? 0o555 : 0o444);
  }
  chmodSync(dir, 0o555);
}

/** Removes a tree made read-only (directories first made writable again, as their owner). */
export function rmTree(dir: string): void {
  if (!existsSync(dir)) return;
  const open = (d: string): void => {
    chmodSync(d, 0o755);
    for (const name of readdirSync(d)) {
      const st = lstatSync(join(d, name));
      if (st.isDirectory()) open(join(d, name));
    }
  };
  try {
    open(dir);
  } catch {
    // what cannot be opened, rmSync reports
  }
  rmSync(dir, { recursive: true, force: true });
}
