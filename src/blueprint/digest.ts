/**
 * A blueprint's digest: sha256 over its directory's canonical form, the thing NemoClaw announced as
 * "digest-verified" and shipped with an empty field and no verifier.
 *
 * Canonical form: the header `carapace-blueprint-v1\n`, then for every regular file, in the byte
 * order of its relative path (`/`-separated, UTF-8): the path, NUL, its mode, NUL, its size in
 * decimal, NUL, its bytes. The size prefix makes the form unambiguous (no file's bytes can pass for
 * the next file's header); the path makes a renamed file a different blueprint; the mode is `755`
 * when any execute bit is set and `644` otherwise, so that a checkout under another umask keeps
 * the digest while `chmod +x` on a config file changes it.
 *
 * Trust assumption: the digest is compared with the one recorded at publish time (`blueprint.digest`,
 * outside the canonical form, as are the signatures in `blueprint.sig`). Whoever can rewrite both
 * the files and that line can make a blueprint that verifies: that is what signatures are for.
 * Anything but a regular file or a directory (a symlink that could point outside, a fifo, a
 * device) is refused rather than hashed, so what is verified is what is read later.
 */
import { createHash } from 'node:crypto';
import { lstatSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { BlueprintError } from './errors.js';

export const DIGEST_FILE = 'blueprint.digest';
export const SIGNATURE_FILE = 'blueprint.sig';
const HEADER = 'carapace-blueprint-v1\n';
const DIGEST_FORM = /^sha256:[0-9a-f]{64}$/;

export interface BlueprintFile {
  /** Relative, `/`-separated. */
  path: string;
  /** 0o755 or 0o644. */
  mode: number;
  size: number;
}

/** The blueprint's files in canonical order (its digest and signature files excluded). */
export function blueprintFiles(dir: string): BlueprintFile[] {
  const out: BlueprintFile[] = [];
  const walk = (rel: string): void => {
    for (const name of readdirSync(join(dir, rel))) {
      const path = rel === '' ? name : `${rel}/${name}`;
      if (rel === '' && (name === DIGEST_FILE || name === SIGNATURE_FILE)) continue;
      const st = lstatSync(join(dir, path));
      if (st.isDirectory()) walk(path);
      else if (st.isFile()) out.push({ path, mode: (st.mode & 0o111) !== 0 ? 0o755 : 0o644, size: st.size });
      else
        throw new BlueprintError(
          'BLUEPRINT_LAYOUT',
          `${join(dir, path)}: a blueprint holds only regular files and directories, not ${st.isSymbolicLink() ? 'a symlink' : 'a special file'}; replace it with the file itself`,
        );
    }
  };
  walk('');
  return out.sort((a, b) => Buffer.compare(Buffer.from(a.path), Buffer.from(b.path)));
}

/** `sha256:<hex>` of the directory's canonical form. */
export function computeDigest(dir: string): string {
  const hash = createHash('sha256').update(HEADER);
  for (const f of blueprintFiles(dir)) {
    const bytes = readFileSync(join(dir, f.path));
    hash.update(`${f.path}\0${f.mode.toString(8)}\0${bytes.length}\0`);
    hash.update(bytes);
  }
  return `sha256:${hash.digest('hex')}`;
}

/** The digest recorded at publish time; DIGEST_MISSING when there is none or it is empty. */
export function recordedDigest(dir: string): string {
  let text: string;
  try {
    text = readFileSync(join(dir, DIGEST_FILE), 'utf8');
  } catch {
    throw new BlueprintError(
      'DIGEST_MISSING',
      `${dir}: no ${DIGEST_FILE}; a blueprint without a recorded digest is not trusted (its author records one with carapace blueprint sign ${dir})`,
    );
  }
  const line = text.trim();
  if (line === '' || line === 'sha256:')
    throw new BlueprintError(
      'DIGEST_MISSING',
      `${join(dir, DIGEST_FILE)}: the digest is empty; nothing to verify against, so the blueprint is refused`,
    );
  if (!DIGEST_FORM.test(line))
    throw new BlueprintError(
      'DIGEST_MISSING',
      `${join(dir, DIGEST_FILE)}: "${line.slice(0, 80)}" is not a digest (sha256: and 64 hex digits)`,
    );
  return line;
}

/**
 * Verifies the directory against its recorded digest, fail closed: no digest, an empty one or a
 * different one is an error. Returns the digest.
 */
export function verifyDigest(dir: string): string {
  const recorded = recordedDigest(dir);
  const actual = computeDigest(dir);
  if (actual !== recorded)
    throw new BlueprintError(
      'DIGEST_MISMATCH',
      `${dir}: the files do not match the recorded digest (recorded ${recorded}, found ${actual}); the blueprint was changed after it was published — refusing it`,
    );
  return actual;
}

/** A digest as a directory name: `sha256-<hex>`. */
export function digestDirName(digest: string): string {
  return digest.replace(':', '-');
}
