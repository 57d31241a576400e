/**
 * Where blueprints come from: the built-in ones shipped with Carapace (`blueprints/NAME/` of the
 * installation, trusted as the installation itself is, digest still verified before every use),
 * a directory the user names, or the store of installed ones.
 */
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { packageRoot } from '../sandbox/native-paths.js';
import { loadBlueprintManifest, MANIFEST } from './manifest.js';
import { recordedDigest } from './digest.js';
import { BlueprintError } from './errors.js';
import { BlueprintStore, type TrustSettings, type VerifiedBlueprint } from './store.js';

export function builtinBlueprintsDir(): string {
  return join(packageRoot(), 'blueprints');
}

/** The agent onboarding offers first, and sets up when nothing names one (no terminal, no --agent). */
export const DEFAULT_AGENT = 'openclaw';

export function builtinBlueprintNames(dir = builtinBlueprintsDir()): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((n) => existsSync(join(dir, n, MANIFEST)))
    .sort();
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

/** Where a blueprint named on a command line is: a directory, a built-in one, or installed ones. */
type BlueprintLocation =
  | { kind: 'directory'; dir: string }
  | { kind: 'builtin'; dir: string }
  | { kind: 'installed'; digests: string[] };

/**
 * Finds what `ref` names without verifying or installing anything, or throws BLUEPRINT_NOT_FOUND
 * (exit 3) saying what exists: cheap enough to check a command line before any other work.
 */
export function locateBlueprint(ref: string, store: BlueprintStore): BlueprintLocation {
  if (ref.includes('/') || ref.startsWith('.')) {
    if (!isDirectory(ref) || !existsSync(join(ref, MANIFEST)))
      throw new BlueprintError('BLUEPRINT_NOT_FOUND', `${ref}: not a blueprint directory (no ${MANIFEST})`);
    return { kind: 'directory', dir: resolve(ref) };
  }
  const builtin = join(builtinBlueprintsDir(), ref);
  // The shipped version wins over an older installed copy of the same name: an upgrade of
  // Carapace upgrades its built-in blueprints.
  if (!ref.startsWith('sha256:') && existsSync(join(builtin, MANIFEST)))
    return { kind: 'builtin', dir: builtin };
  const digests = store
    .digests()
    .filter((d) =>
      ref.startsWith('sha256:') ? d.startsWith(ref) && ref.length >= 15 : store.peekName(d) === ref,
    );
  if (digests.length === 0) {
    const names = builtinBlueprintNames();
    throw new BlueprintError(
      'BLUEPRINT_NOT_FOUND',
      `no blueprint "${ref}": built-in ones are ${names.join(', ')}; install another with carapace blueprint install DIR`,
    );
  }
  return { kind: 'installed', digests };
}

/**
 * A reference as a user types it: a directory (`./my-agent`, containing blueprint.yaml), a digest
 * (`sha256:…`, installed), or a name (installed, else built-in, installed now). Returns the
 * installed, verified blueprint. Built-ins need no signature; anything else does when the caller
 * trusts any key (`trust.requireSigned`).
 */
export function resolveBlueprint(
  ref: string,
  store: BlueprintStore,
  trust: TrustSettings,
): { blueprint: VerifiedBlueprint; installedNow: boolean } {
  const where = locateBlueprint(ref, store);
  if (where.kind !== 'installed') {
    const { installed, fresh } = store.install(
      where.dir,
      where.kind === 'builtin' ? { ...trust, requireSigned: false } : trust,
    );
    return { blueprint: installed, installedNow: fresh };
  }
  return { blueprint: store.find(ref, trust)[0]!, installedNow: false };
}

/**
 * Whether the agent a reference names talks to a model (its blueprint has an `inference`
 * section), read before anything is installed so that onboarding asks for a model only when the
 * agent can use one. The blueprint is not verified here (resolveBlueprint does that before any
 * use); a reference that cannot be read counts as one that does, so the questions are asked and
 * the step that resolves it says what is wrong.
 */
export function usesModel(ref: string, store: BlueprintStore, trust: TrustSettings): boolean {
  try {
    const dir =
      ref.includes('/') || ref.startsWith('.')
        ? ref
        : existsSync(join(builtinBlueprintsDir(), ref, MANIFEST))
          ? join(builtinBlueprintsDir(), ref)
          : null;
    const blueprint =
      dir !== null ? loadBlueprintManifest(dir).blueprint : store.find(ref, trust)[0]?.blueprint;
    return blueprint === undefined || blueprint.inference !== undefined;
  } catch {
    return true;
  }
}

/**
 * Whether an installed digest is one Carapace ships (the digest a built-in directory records):
 * decided by digest, never by name, so that a blueprint someone else calls "openclaw" gets no
 * built-in's exemption from signatures.
 */
export function isBuiltinDigest(digest: string, dir = builtinBlueprintsDir()): boolean {
  return builtinBlueprintNames(dir).some((n) => {
    try {
      return recordedDigest(join(dir, n)) === digest;
    } catch {
      return false;
    }
  });
}
