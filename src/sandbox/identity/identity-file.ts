/**
 * The host's uid registry on disk (src/sandbox/identity/identity.ts decides what goes in it): read and
 * validated whole, fail closed; written whole to a temporary file and renamed into place, flushed
 * (file and directory) only when asked (the fence: see identity.ts's header).
 */
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import type { IdentityRecord } from './identity.js';
import { randomHex } from '../keys.js';

/** Below this, uids belong to the host's own users and services. */
export const LOWEST_SANDBOX_UID = 1000;
/** Changes with every boot: a registry written in an earlier one may have lost its last writes. */
const BOOT_ID_FILE = '/proc/sys/kernel/random/boot_id';

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
}

/**
 * The registry at `file` for the uid range `range`, validated: a record outside the range, below
 * 1000, recorded twice or malformed throws (its message names the file and what is wrong). A file
 * that does not exist is an empty registry.
 */
export function readRegistry(
  file: string,
  range: { base: number; size: number },
  validName: (name: string) => boolean,
): RegistryFile {
  const { base, size } = range;
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    return { version: 1, base, size, next: base, records: [] };
  }
  const bad = (why: string) =>
    new RegistryFileError(
      `the sandbox uid registry ${file} is not valid (${why}): restore it or remove the records that are wrong`,
    );
  let reg: RegistryFile;
  try {
    reg = JSON.parse(text) as RegistryFile;
  } catch {
    throw bad('not JSON');
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

/** Replaces the registry at `file` (in `dir`) with `text`; with `flush`, durably. */
export function writeRegistry(dir: string, file: string, text: string, flush: boolean): void {
  const tmp = join(dir, `.registry.${process.pid}.${randomHex(4)}`);
  const fd = openSync(tmp, 'wx', 0o600);
  try {
    writeSync(fd, text + '\n');
    if (flush) fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, file);
  if (flush) syncDirectory(dir);
}

/** This boot's id; '' where the kernel does not say. */
export function bootId(): string {
  try {
    return readFileSync(BOOT_ID_FILE, 'utf8').trim();
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
