/**
 * The host's uid registry on disk (src/sandbox/identity/identity.ts decides what goes in it): read and
 * validated whole, fail closed; written whole, flushed (file and directory) only when asked (the
 * fence: see identity.ts's header).
 *
 * `registry.json` is a symlink to the generation in force, `registry.<n>.json`, or
 * `registry.<n>.durable.json` for one written with a flush. A change writes generation n+1 under a
 * new name and renames a new link over `registry.json`. Renaming a new regular file over the old one
 * instead made ext4 (auto_da_alloc) allocate and start writing the new file's blocks inside the
 * rename: 0.3 ms of every sandbox start, often over 1 ms on a busy disk, and the same again at every
 * stop (docs/benchmarks.md). Renaming a link costs none of that.
 *
 * What a power cut may leave: the link in force pointing at a generation whose data never reached
 * the disk (an empty file). The last durable generation is therefore kept until the next durable
 * one replaces it, and a current generation that is empty or not JSON is read as that one, only
 * when it was written in an earlier boot (a power cut means a reboot): allocation then resumes at
 * its fence, past every uid handed out after it (identity.ts). In the same boot, such a file is
 * someone's doing, and every allocation stops as for any invalid registry. A registry.json that is
 * a regular file (written by an earlier Carapace) is read as it is and replaced by a link at the next
 * change; while it is one, no generation beside it is trusted (an earlier Carapace may have handed
 * out uids past any of them), and taking it over removes them.
 */
import {
  closeSync,
  fsyncSync,
  lstatSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  symlinkSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { basename, dirname, isAbsolute, join } from 'node:path';
import type { IdentityRecord } from './identity.js';
import { randomHex } from '../keys.js';

/** Below this, uids belong to the host's own users and services. */
export const LOWEST_SANDBOX_UID = 1000;
/** Changes with every boot: a registry written in an earlier one may have lost its last writes. */
const BOOT_ID_FILE = '/proc/sys/kernel/random/boot_id';
/** A generation's name: its number, and whether it was flushed. */
const GENERATION = /^registry\.(\d+)(\.durable)?\.json$/;
/** How often a reader follows the link again when a writer replaced it under it. */
const LINK_RACE_RETRIES = 100;

export interface RegistryFile {
  version: 1;
  base: number;
  size: number;
  next: number;
  records: IdentityRecord[];
  /** When every record was last checked for being an orphan (ms since the epoch). */
  sweptAt?: number;
  /** On disk for sure: every uid handed out lies before this cursor position (see identity.ts). */
  fence?: number;
  /** The boot the file was written in (the kernel's boot_id). */
  boot?: string;
}

export class RegistryFileError extends Error {
  override name = 'RegistryFileError';
  constructor(
    message: string,
    /** Empty or not JSON: what a power cut leaves of a write (see the header). */
    readonly lost = false,
  ) {
    super(message);
  }
}

/**
 * The registry at `file` for the uid range `range`, validated: a record outside the range, below
 * 1000, recorded twice or malformed throws (its message names the file and what is wrong). A file
 * that does not exist is an empty registry. `boot` is this boot's id, asked for only when the
 * generation in force is unreadable (see the header).
 */
export function readRegistry(
  file: string,
  range: { base: number; size: number },
  validName: (name: string) => boolean,
  boot: () => string = bootId,
): RegistryFile {
  const text = readCurrent(file);
  if (text === null) return { version: 1, base: range.base, size: range.size, next: range.base, records: [] };
  try {
    return parseRegistry(text, file, range, validName);
  } catch (err) {
    const lost = err instanceof RegistryFileError && err.lost ? lastDurable(file) : null;
    if (lost === null) throw err;
    const reg = parseRegistry(readFileSync(lost, 'utf8'), lost, range, validName);
    // Only a crash loses a write, and a crash means a new boot: in this one, fail closed.
    if (reg.fence === undefined || reg.boot === undefined || reg.boot === boot()) throw err;
    return reg;
  }
}

/** The generation in force's text; null when there is no registry at all. */
function readCurrent(file: string): string | null {
  for (let attempt = 0; ; attempt++) {
    try {
      return readFileSync(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      if (!lstatSync(file, { throwIfNoEntry: false })) return null;
      // The link is there, its generation is not: a writer replaced both between our following the
      // link and opening what it named. Follow it again.
      if (attempt === LINK_RACE_RETRIES)
        throw new RegistryFileError(`the sandbox uid registry ${file} names a file that does not exist`);
    }
  }
}

/** The newest durable generation beside `file` other than the one in force, or null. */
function lastDurable(file: string): string | null {
  const current = linkTarget(file);
  // A regular file in force was written by an earlier Carapace (an upgrade in progress), which
  // knows nothing of generations: any beside it may be older than uids it handed out since.
  if (current === null) return null;
  let best: { n: number; name: string } | null = null;
  for (const name of readdirSync(dirname(file))) {
    const m = GENERATION.exec(name);
    if (!m?.[2] || name === current) continue;
    const n = Number(m[1]);
    if (!best || n > best.n) best = { n, name };
  }
  return best ? join(dirname(file), best.name) : null;
}

function parseRegistry(
  text: string,
  file: string,
  range: { base: number; size: number },
  validName: (name: string) => boolean,
): RegistryFile {
  const { base, size } = range;
  const bad = (why: string, lost = false) =>
    new RegistryFileError(
      `the sandbox uid registry ${file} is not valid (${why}): restore it or remove the records that are wrong`,
      lost,
    );
  let reg: RegistryFile;
  try {
    reg = JSON.parse(text) as RegistryFile;
  } catch {
    throw bad(text === '' ? 'empty' : 'not JSON', true);
  }
  if (reg?.version !== 1 || !Array.isArray(reg.records)) throw bad('unknown format');
  if (reg.base !== base || reg.size !== size) {
    throw new RegistryFileError(
      `the sandbox uid registry ${file} was made for uids ${reg.base}-${reg.base + reg.size - 1}, ` +
        `not ${base}-${base + size - 1}: keep the host's range (unset CARAPACE_UID_BASE)`,
    );
  }
  const inRange = (n: unknown) => Number.isInteger(n) && (n as number) >= base && (n as number) < base + size;
  if (!inRange(reg.next)) throw bad(`next ${String(reg.next)} is outside the range`);
  if (reg.sweptAt !== undefined && !Number.isFinite(reg.sweptAt)) throw bad('sweptAt is not a time');
  if (reg.fence !== undefined && !inRange(reg.fence))
    throw bad(`fence ${String(reg.fence)} is outside the range`);
  if (reg.boot !== undefined && typeof reg.boot !== 'string') throw bad('boot is not a boot id');
  const seen = new Set<number>();
  for (const r of reg.records) {
    if (!inRange(r.uid) || r.uid < LOWEST_SANDBOX_UID) throw bad(`uid ${String(r.uid)} is outside the range`);
    if (seen.has(r.uid)) throw bad(`uid ${r.uid} is recorded twice`);
    seen.add(r.uid);
    if (typeof r.state !== 'string' || !isAbsolute(r.state)) throw bad(`uid ${r.uid} has no state directory`);
    if (typeof r.name !== 'string' || !validName(r.name)) throw bad(`uid ${r.uid} has an invalid name`);
    if (!Array.isArray(r.paths) || !r.paths.every((p) => typeof p === 'string' && isAbsolute(p)))
      throw bad(`uid ${r.uid} has invalid paths`);
  }
  return reg;
}

/**
 * Replaces the registry at `file` (in `dir`) with `text`: a new generation, and the link moved onto
 * it; with `flush`, durably, and it becomes the one a lost write falls back to (see the header).
 */
export function writeRegistry(dir: string, file: string, text: string, flush: boolean): void {
  const current = linkTarget(file);
  const m = current !== null ? GENERATION.exec(current) : null;
  const name = `registry.${m ? Number(m[1]) + 1 : 1}${flush ? '.durable' : ''}.json`;
  // Taking over from a regular file (an earlier Carapace's): generations beside it are stale.
  if (current === null)
    for (const other of readdirSync(dir)) if (GENERATION.test(other)) unlinkSync(join(dir, other));
  // Nothing names a generation past the one in force: one there was left by a writer that died.
  const fd = openSync(join(dir, name), 'w', 0o600);
  try {
    writeSync(fd, text + '\n');
    if (flush) fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  const link = join(dir, `.registry.${process.pid}.${randomHex(4)}`);
  symlinkSync(name, link);
  renameSync(link, file);
  if (flush) {
    syncDirectory(dir);
    // Durable now: every other generation goes, the durable one before it too.
    for (const other of readdirSync(dir))
      if (other !== name && GENERATION.test(other)) unlinkSync(join(dir, other));
  } else if (m && !m[2]) {
    unlinkSync(join(dir, current!)); // a durable one stays: it is what a lost write falls back to
  }
}

/** The name `file` links to in its directory; null when it is not a link there. */
function linkTarget(file: string): string | null {
  try {
    const target = readlinkSync(file);
    return basename(target) === target ? target : null;
  } catch {
    return null; // missing, or a regular file (an earlier Carapace's)
  }
}

let thisBoot = '';

/** This boot's id; '' where the kernel does not say. Read once: a process never outlives its boot. */
export function bootId(): string {
  if (thisBoot !== '') return thisBoot;
  try {
    return (thisBoot = readFileSync(BOOT_ID_FILE, 'utf8').trim());
  } catch {
    return '';
  }
}

/** Makes a rename in `dir` durable. */
function syncDirectory(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
