/**
 * Files every sandbox of this host gets the same, kept in `<run>/shared/`: the synthesized passwd
 * and group, the empty mask over secrets, the seccomp program. Each is written once, under a name
 * that carries a key of what it was made from (src/sandbox/keys.ts: not collision-resistant, so
 * what a file holds is checked before it is used), so a change is a new file; writes are atomic
 * (temporary file + rename), and a rewrite replaces the name, never the file a running sandbox
 * binds.
 *
 * Trust: the run directory is Carapace's own (root's, as root), the same that holds the copy of
 * carapace-init every sandbox runs. Nothing of a sandbox's can write there.
 */
import {
  chmodSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { contentKey } from './keys.js';

function writeShared(path: string, content: string | Buffer, mode: number): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o711 });
  chmodSync(dirname(path), 0o711);
  const tmp = `${path}.${process.pid}`;
  writeFileSync(tmp, content, { mode });
  chmodSync(tmp, mode);
  renameSync(tmp, path); // a concurrent start never binds or reads a half-written file
}

/** The shared file `name` with this content and mode (made if missing or not that); its host path. */
export function sharedFile(runDir: string, name: string, content: string, mode: number): string {
  const path = join(runDir, 'shared', `${name}-${contentKey(String(mode), content)}`);
  if (!holds(path, content, mode)) writeShared(path, content, mode);
  return path;
}

/**
 * Files this process read and found right, by path: the inode and change time they had then. A
 * file still that inode, unchanged since, is not read again (two reads of every start, for passwd
 * and group). Only a change time a second old is trusted: a write in the same clock tick as the
 * read could leave it as it was.
 */
const checked = new Map<string, { ino: number; ctimeMs: number; content: string }>();
const SETTLED_MS = 1000;

function holds(path: string, content: string, mode: number): boolean {
  try {
    // An empty file is not read: the mask is mode 0, which a rootless start cannot open (it was
    // rewritten at every start).
    const st = statSync(path);
    if ((st.mode & 0o7777) !== mode || st.size !== Buffer.byteLength(content)) return false;
    if (st.size === 0) return true;
    const seen = checked.get(path);
    if (seen && seen.ino === st.ino && seen.ctimeMs === st.ctimeMs && seen.content === content) return true;
    if (readFileSync(path, 'utf8') !== content) return false;
    if (Date.now() - st.ctimeMs >= SETTLED_MS)
      checked.set(path, { ino: st.ino, ctimeMs: st.ctimeMs, content });
    return true;
  } catch {
    return false;
  }
}

let program: Buffer | undefined;

/**
 * The seccomp program (src/sandbox/seccomp/) for this host's architecture. Building it means
 * loading the seccomp modules, which would cost a one-shot start more than the sandbox's own set-up,
 * so it is built once per build of Carapace: the file's name carries the architecture and the
 * seccomp modules' names, sizes and mtimes.
 */
export async function seccompProgram(runDir: string): Promise<Buffer> {
  if (program) return program;
  // Bundled (dist/cli/, scripts/build-cli.ts) there is no seccomp/ directory: every build rewrites
  // the chunks, this module's among them, so its own size and mtime stand for the seccomp modules'.
  const here = fileURLToPath(import.meta.url);
  const sources = fileURLToPath(new URL('./seccomp/', import.meta.url));
  const files = existsSync(sources)
    ? readdirSync(sources)
        .sort()
        .map((f) => join(sources, f))
    : [here];
  const stamp = files.map((file) => {
    const st = statSync(file);
    return `${basename(file)}:${st.size}:${st.mtimeMs}`;
  });
  // The file starts with the stamp it was built for, checked on reading: its name is only a key.
  const header = Buffer.from(`${stamp.join('\n')}\n\n`);
  const path = join(runDir, 'shared', `seccomp-${process.arch}-${contentKey(...stamp)}.bpf`);
  const kept = existsSync(path) ? readFileSync(path) : null;
  if (kept !== null && kept.subarray(0, header.length).equals(header)) {
    program = kept.subarray(header.length);
  } else {
    const { buildSeccompProgram } = await import('./seccomp/index.js');
    program = buildSeccompProgram().bytes;
    writeShared(path, Buffer.concat([header, program]), 0o644);
  }
  return program;
}
