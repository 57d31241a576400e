/**
 * Files every sandbox of this host gets the same, kept in `<run>/shared/`: the synthesized passwd
 * and group, the empty mask over secrets, the seccomp program. Each is written once, under a name
 * that carries a digest of what it was made from, so a change is a new file and never an edit of
 * one a running sandbox binds; writes are atomic (temporary file + rename).
 *
 * Trust: the run directory is Carapace's own (root's, as root), the same that holds the copy of
 * carapace-init every sandbox runs. Nothing of a sandbox's can write there.
 */
import { createHash } from 'node:crypto';
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

function digest(...parts: (string | Buffer)[]): string {
  const h = createHash('sha256');
  for (const p of parts) h.update(p).update('\0');
  return h.digest('hex').slice(0, 16);
}

function writeShared(path: string, content: string | Buffer, mode: number): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o711 });
  chmodSync(dirname(path), 0o711);
  const tmp = `${path}.${process.pid}`;
  writeFileSync(tmp, content, { mode });
  chmodSync(tmp, mode);
  renameSync(tmp, path); // a concurrent start never binds or reads a half-written file
}

/** The shared file `name` with this content and mode (created if missing); its host path. */
export function sharedFile(runDir: string, name: string, content: string, mode: number): string {
  const path = join(runDir, 'shared', `${name}-${digest(String(mode), content)}`);
  if (!existsSync(path)) writeShared(path, content, mode);
  return path;
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
  const path = join(runDir, 'shared', `seccomp-${process.arch}-${digest(...stamp)}.bpf`);
  if (existsSync(path)) {
    program = readFileSync(path);
  } else {
    const { buildSeccompProgram } = await import('./seccomp/index.js');
    program = buildSeccompProgram().bytes;
    writeShared(path, program, 0o644);
  }
  return program;
}
