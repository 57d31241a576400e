/**
 * Size-based rotation of an audit file: `<name>` (the current file), and its older generations
 * `<name>.1` (the most recent) … `<name>.<files-1>` (the oldest), in one directory.
 *
 * Threat: a sandbox chooses how many lines its audit trail gets (every refused connect and every
 * request is one), and the host's disk is shared. So each file holds at most `maxFileBytes` (a
 * single line longer than that gets a file of its own), and at most `files` of them are kept: the
 * sandbox's audit takes at most `maxFileBytes × files` of the host's disk. When the oldest
 * generation is dropped, that is said in the audit itself (`onDropped`: how many lines and bytes),
 * so an operator sees that history is gone and how much.
 *
 * Assumption: the directory is the host's own, never inside a tree a sandbox can write (the
 * gateway's `<state>/audit`, 0700). Nothing here follows a symlink even so: the directory is held
 * open and every name is reached through `/proc/self/fd/<dir>/<name>` (a directory renamed or
 * replaced by a symlink afterwards changes nothing); renames and unlinks act on names and never
 * follow one; a file is opened only with O_NOFOLLOW, and a new current file with O_EXCL as well, so
 * a symlink planted where a generation goes is at most renamed over or dropped, never written
 * through or read through.
 *
 * No line is lost or torn: rotation happens between whole lines, in the writer's own (synchronous)
 * append, and the new current file is in place before the next line is written. Durability stays
 * the writer's: a file rotated away is flushed (fdatasync) and the directory's renames synced
 * (fsync) at the next `sync()`, as a line written to the current file would be.
 */
import {
  closeSync,
  constants,
  fdatasyncSync,
  fstatSync,
  fsyncSync,
  mkdirSync,
  openSync,
  read,
  readdirSync,
  renameSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { readdir, unlink } from 'node:fs/promises';

/** How big an audit file grows, and how many are kept (the current one included). */
export interface AuditRotation {
  /** A file that would pass this many bytes is renamed to generation `.1` and a new one started. */
  maxFileBytes: number;
  /** Files kept: the current one and `files - 1` generations; the oldest beyond is dropped. */
  files: number;
}

/**
 * 16 MiB × 4 = 64 MiB per sandbox (docs/gateway.md, "The audit trail's size"): a denial is about
 * 600 bytes, so the current file alone holds ~28,000 of them and the four about 110,000, weeks of an
 * always-on agent's traffic; and a user at the default quota of 32 sandboxes holds at most 2 GiB.
 */
export const DEFAULT_AUDIT_ROTATION: AuditRotation = { maxFileBytes: 16 * 1024 * 1024, files: 4 };

/** The oldest generation, dropped to keep `files`. */
export interface DroppedGeneration {
  /** Its name when it was dropped (`<name>.<files-1>`). */
  file: string;
  lines: number;
  bytes: number;
}

/** An audit file that cannot be opened or rotated as it must (a name that is not a regular file). */
export class AuditFileError extends Error {
  override name = 'AuditFileError';
  constructor(
    readonly code: 'audit-not-regular',
    message: string,
  ) {
    super(message);
  }
}

/** What a dropped generation's name gets while its lines are counted: `<name>.3.dropped-1a2b3c4d`. */
const DROPPED_SUFFIX = '.dropped-';
let droppedSeq = 0;
/**
 * A name of its own for each dropped generation: the time and a count, in hex (one gateway per
 * state directory, so unique). Not node:crypto: a one-off `carapace run` loads this file, and
 * loading OpenSSL costs its start ~5 ms (test/attacks/startup-shortcuts.test.ts).
 */
const droppedId = () => `${Date.now().toString(16)}${(++droppedSeq).toString(16).padStart(4, '0')}`;

const READ = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;
const APPEND = constants.O_WRONLY | constants.O_APPEND | constants.O_NOFOLLOW;

/** A directory of audit files, held open: every name in it is reached through its descriptor. */
export class AuditDirectory {
  readonly fd: number;
  /** Dropped generations left by an earlier process, by base name: listed on first use. */
  private leftovers: Map<string, { name: string; held: string }[]> | null = null;

  constructor(readonly path: string) {
    mkdirSync(path, { recursive: true, mode: 0o700 });
    this.fd = openSync(path, constants.O_RDONLY | constants.O_DIRECTORY);
  }

  /** `name` in this directory, as the kernel finds it from the open descriptor. */
  at(name: string): string {
    return `/proc/self/fd/${this.fd}/${name}`;
  }

  /** Opens `name` for reading, never through a symlink; null when it is missing or not a regular file. */
  openForReading(name: string): { fd: number; size: number } | null {
    let fd: number;
    try {
      fd = openSync(this.at(name), READ);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ELOOP') return null;
      throw err;
    }
    const st = fstatSync(fd);
    if (!st.isFile()) {
      closeSync(fd);
      return null;
    }
    return { fd, size: st.size };
  }

  /** Removes `base` and every generation of it (`base.N`), whatever `files` was when they were made. */
  async remove(base: string): Promise<void> {
    const names = await readdir(this.at(''));
    const ours = new RegExp(`^${base.replace(/[.]/g, '\\.')}(\\.\\d+(\\.dropped-[0-9a-f]+)?|\\.new)?$`);
    for (const name of names) {
      if (!ours.test(name)) continue;
      await unlink(this.at(name)).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'ENOENT') throw err;
      });
    }
  }

  /**
   * `base` becomes `.1`, each `.k` becomes `.k+1`, the oldest is dropped, and a new empty `base` is
   * in place, opened with `flags` (plus O_CREAT|O_EXCL, 0600); returns its descriptor, and, with
   * `readDropped`, the dropped generation open for reading (renamed over, still readable). The new
   * file is made first, under a name of its own: a failure there changes nothing, and a failure
   * later leaves the writer on its old file. Shared by the audit's files and the agents' logs.
   */
  rotate(
    base: string,
    rotation: AuditRotation,
    flags: number,
    readDropped: boolean,
  ): { fd: number; dropped: { name: string; held: string; fd: number; size: number } | null } {
    const names = generationNames(base, rotation); // oldest first
    const fresh = `${base}.new`;
    try {
      unlinkSync(this.at(fresh)); // a crash's leftover; unlink never follows a symlink
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    const fd = openSync(this.at(fresh), flags | constants.O_CREAT | constants.O_EXCL, 0o600);
    const oldest = names[0]!;
    const dropped = readDropped ? this.openForReading(oldest) : null;
    // Counted under a name of its own until its event is out (RotatingAuditFile): a process killed
    // before that leaves the name, and the next one counts it (leftoverDrops).
    const held = dropped && `${oldest}${DROPPED_SUFFIX}${droppedId()}`;
    try {
      if (held) renameSync(this.at(oldest), this.at(held));
      // The oldest is renamed over first, the current file last.
      for (let k = 1; k < names.length; k++) {
        try {
          renameSync(this.at(names[k]!), this.at(names[k - 1]!));
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        }
      }
      renameSync(this.at(fresh), this.at(base));
    } catch (err) {
      closeSync(fd);
      if (dropped) closeSync(dropped.fd);
      throw err;
    }
    return { fd, dropped: dropped && { name: oldest, held: held!, ...dropped } };
  }

  /**
   * Dropped generations of `base` that a process killed while counting them left (see rotate),
   * each opened for reading, with the name it was dropped as. The directory is listed once, on the
   * first call: only a process before this one can have left any.
   */
  leftoverDrops(base: string): { name: string; held: string; fd: number; size: number }[] {
    if (this.leftovers === null) {
      this.leftovers = new Map();
      for (const held of readdirSync(this.at(''))) {
        const at = held.lastIndexOf(DROPPED_SUFFIX);
        if (at < 0 || !/^[0-9a-f]+$/.test(held.slice(at + DROPPED_SUFFIX.length))) continue;
        const name = held.slice(0, at);
        const of = name.replace(/\.\d+$/, '');
        this.leftovers.set(of, [...(this.leftovers.get(of) ?? []), { name, held }]);
      }
    }
    const found = this.leftovers.get(base) ?? [];
    this.leftovers.delete(base);
    const out = [];
    for (const f of found) {
      const file = this.openForReading(f.held);
      if (file) out.push({ ...f, ...file });
    }
    return out;
  }

  /** Removes a dropped generation once its event is out (a name that is gone already is fine). */
  forgetDrop(held: string): void {
    try {
      unlinkSync(this.at(held));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }

  close(): void {
    closeSync(this.fd);
  }
}

/** The names of `base`'s files, oldest first, the current one last. */
export function generationNames(base: string, rotation: AuditRotation): string[] {
  const names = [base];
  for (let k = 1; k < rotation.files; k++) names.unshift(`${base}.${k}`);
  return names;
}

/** The file writes go to, rotated by size (see the top of this file). */
export class RotatingAuditFile {
  private fd: number;
  private size: number;
  /** Files rotated away since the last sync: flushed then closed by it. */
  private unsynced: number[] = [];
  private renamed = false;
  /** Dropped generations whose lines are still being counted, each done once its event is out. */
  private readonly counting = new Set<Promise<void>>();

  constructor(
    private readonly dir: AuditDirectory,
    readonly base: string,
    private readonly rotation: AuditRotation,
    private readonly onDropped: (d: DroppedGeneration) => void,
  ) {
    this.fd = openSync(dir.at(base), APPEND | constants.O_CREAT, 0o600);
    const st = fstatSync(this.fd);
    if (!st.isFile()) {
      closeSync(this.fd);
      throw new AuditFileError('audit-not-regular', `audit file ${dir.path}/${base} is not a regular file`);
    }
    this.size = st.size;
    for (const d of dir.leftoverDrops(base)) this.countDropped(d.name, d.held, d.fd, d.size);
  }

  /**
   * Appends the lines whole, in order, rotating between two of them when the next would take the
   * file past the limit. Throws when a write or a rotation fails: the lines before are written.
   */
  append(lines: readonly string[]): void {
    const whole = Buffer.from(lines.join(''));
    if (this.size + whole.length <= this.rotation.maxFileBytes) {
      this.write(whole);
      return;
    }
    // Rare (once per file): only now is each line measured.
    let start = 0;
    let bytes = 0;
    for (let i = 0; i < lines.length; i++) {
      const n = Buffer.byteLength(lines[i]!);
      if (this.size + bytes + n > this.rotation.maxFileBytes && this.size + bytes > 0) {
        if (i > start) this.write(Buffer.from(lines.slice(start, i).join('')));
        this.rotate();
        start = i;
        bytes = 0;
      }
      bytes += n;
    }
    this.write(Buffer.from(lines.slice(start).join('')));
  }

  /** Flushes what was appended, to the current file and to those rotated away, and the renames. */
  sync(): void {
    fdatasyncSync(this.fd);
    this.syncRotated();
  }

  /** Resolves once the dropped generations' lines are counted and their events emitted. */
  async dropsCounted(): Promise<void> {
    while (this.counting.size) await Promise.all(this.counting);
  }

  close(): void {
    this.syncRotated();
    closeSync(this.fd);
  }

  private syncRotated(): void {
    for (const fd of this.unsynced) {
      fdatasyncSync(fd);
      closeSync(fd);
    }
    this.unsynced = [];
    if (this.renamed) fsyncSync(this.dir.fd);
    this.renamed = false;
  }

  /**
   * Writes all of `bytes` or throws. write(2) may write part and succeed (a disk that fills, a
   * file-size limit): the rest is written again, which then fails with the reason.
   */
  private write(bytes: Buffer): void {
    let done = 0;
    while (done < bytes.length) {
      const n = writeSync(this.fd, bytes, done, bytes.length - done);
      if (n === 0) throw Object.assign(new Error('audit log write made no progress'), { code: 'EIO' });
      done += n;
      this.size += n;
    }
  }

  /**
   * `base` becomes `.1`, each `.k` becomes `.k+1`, the oldest is dropped (counted first), and a new
   * empty `base` is in place. The new file is made first, under a name of its own: a failure there
   * changes nothing, and a failure later leaves the writer on its old file.
   */
  private rotate(): void {
    const { fd, dropped } = this.dir.rotate(this.base, this.rotation, APPEND, true);
    this.renamed = true;
    this.unsynced.push(this.fd);
    this.fd = fd;
    this.size = 0;
    if (dropped) this.countDropped(dropped.name, dropped.held, dropped.fd, dropped.size);
  }

  /**
   * Off the event loop: a dropped generation holds up to the limit, ~10 ms of reading at 16 MiB.
   * Its file goes (`held`, its name meanwhile) only once the event is written: a process killed
   * before leaves it for the next one to count.
   */
  private countDropped(file: string, held: string, fd: number, bytes: number): void {
    let done!: () => void;
    const counted = new Promise<void>((resolve) => (done = resolve));
    this.counting.add(counted);
    const buf = Buffer.allocUnsafe(Math.min(1 << 20, Math.max(bytes, 1)));
    let lines = 0;
    let offset = 0;
    // A read that fails (EIO) ends the count: the event still says the bytes, and the lines seen.
    const finish = () => {
      closeSync(fd);
      this.counting.delete(counted);
      try {
        this.onDropped({ file, lines, bytes });
        this.dir.forgetDrop(held);
      } finally {
        done();
      }
    };
    const next = () =>
      read(fd, buf, 0, buf.length, offset, (err, n) => {
        if (err || n === 0 || offset >= bytes) return finish();
        const end = Math.min(n, bytes - offset);
        for (let i = buf.indexOf(10); i !== -1 && i < end; i = buf.indexOf(10, i + 1)) lines++;
        offset += n;
        next();
      });
    next();
  }
}
