/**
 * Carapace's own directory of a sandbox, `<runtime>/own`, bound read-only at /.carapace: the
 * init, the trust files, and the sources of every synthesized file and mask. One flat directory:
 * a synthesized file's source is named after its in-sandbox path, `/` written `%2F` and `%` `%25`
 * (`%2Fetc%2Fpasswd` is bound at /etc/passwd); `masked` is the unreadable empty file laid over
 * secrets. One bind for all of it, and the masks' sources stay reachable inside, where
 * carapace-mask finds them to bind a detached mask again (mask-guard.ts).
 *
 * Flat because every directory made here costs a start: a directory or a file with content needs
 * a block, which on a journaled filesystem whose run directory sees a sandbox come and go is a
 * fifth of a millisecond or more (docs/benchmarks.md); links and names cost next to nothing.
 *
 * Trust: the directory is the host's (root's, as root), made fresh at every start; the sandbox
 * sees it read-only and owns nothing in it. Nothing in it is secret: the sandbox reads the same
 * files at their bound names. What every sandbox gets the same (passwd, group, the mask, the init)
 * is a hard link to the shared copy in the run directory (shared-files.ts), a copy where a link
 * cannot be made.
 */
import {
  chmodSync,
  copyFileSync,
  existsSync,
  linkSync,
  mkdirSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join, posix } from 'node:path';
import { OWN_DIR_PATH, within, type OwnDir } from './mount-plan.js';
import { nativeBinary } from '../native-paths.js';
import { SandboxStartError } from '../launch/launch.js';
import { sharedFile } from '../shared-files.js';
import type { SandboxSpec } from '../spec.js';

const PASSWD =
  'root:x:0:0:root:/root:/usr/sbin/nologin\n' +
  'sandbox:x:1000:1000:Carapace sandbox:/sandbox:/bin/sh\n' +
  'nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n';
const GROUP = 'root:x:0:\nsandbox:x:1000:\nnogroup:x:65534:\n';

/** The name in the own directory of the source of a synthesized file outside it. */
export function sourceName(inside: string): string {
  return inside.replace(/%/g, '%25').replace(/\//g, '%2F');
}

/**
 * Makes the directory (replacing what an earlier start left); returns it and the synthesized files
 * to bind outside /.carapace: in-sandbox path → host file in it.
 */
export function makeOwnDir(
  runDir: string,
  runtime: string,
  spec: SandboxSpec,
  extra: { path: string; content: string }[],
): { own: OwnDir; files: Map<string, string> } {
  rmSync(runtime, { recursive: true, force: true });
  mkdirSync(runtime, { recursive: true, mode: 0o711 });
  chmodSync(runtime, 0o711);
  const dir = join(runtime, 'own');
  // Whatever our umask: bwrap, as the sandbox's uid, must reach everything in here.
  const mkdir = (d: string) => {
    mkdirSync(d, { recursive: true, mode: 0o755 });
    for (let p = d; p !== runtime; p = dirname(p)) chmodSync(p, 0o755);
  };
  mkdir(dir);
  const files = new Map<string, string>();
  const readable: string[] = [];
  const taken = new Set(['init', 'masked']);
  const place = (inside: string) => {
    // The host path is made from the in-sandbox one: never a `..` that would lead out of `dir`.
    if (!posix.isAbsolute(inside) || posix.normalize(inside) !== inside || inside.endsWith('/'))
      throw new SandboxStartError(
        `a sandbox file's path must be absolute and normal, got ${JSON.stringify(inside)}`,
      );
    const own = within(inside, OWN_DIR_PATH);
    const name = own ? inside.slice(OWN_DIR_PATH.length + 1) : sourceName(inside);
    if (name === '' || taken.has(name))
      throw new SandboxStartError(`two sandbox files would be one: ${JSON.stringify(inside)}`);
    taken.add(name);
    const host = join(dir, name);
    if (own) {
      if (name.includes('/')) mkdir(dirname(host));
      readable.push(inside);
    } else {
      files.set(inside, host);
    }
    return host;
  };
  const shared = (inside: string, name: string, content: string, mode: number) =>
    linkOrWrite(sharedFile(runDir, name, content, mode), place(inside), content, mode);
  const write = (inside: string, content: string, mode = 0o644) => {
    const host = place(inside);
    writeFileSync(host, content, { mode });
    chmodSync(host, mode);
  };

  linkOrCopy(installInit(runDir), join(dir, 'init'));
  const mask = join(dir, 'masked');
  linkOrWrite(sharedFile(runDir, 'masked', '', 0), mask, '', 0);
  shared('/etc/passwd', 'etc_passwd', PASSWD, 0o644);
  shared('/etc/group', 'etc_group', GROUP, 0o644);
  write('/etc/hostname', `${spec.name}\n`);
  write('/etc/hosts', `127.0.0.1\tlocalhost ${spec.name}\n::1\tlocalhost ip6-localhost ${spec.name}\n`);
  for (const f of [...spec.files, ...extra]) write(f.path, f.content);
  return { own: { dir, mask, readable }, files };
}

function linkOrWrite(source: string, target: string, content: string, mode: number): void {
  try {
    linkSync(source, target);
  } catch {
    writeFileSync(target, content, { mode });
    chmodSync(target, mode);
  }
}

function linkOrCopy(source: string, target: string): void {
  try {
    linkSync(source, target);
  } catch {
    copyFileSync(source, target);
    chmodSync(target, 0o755);
  }
}

/**
 * Copies carapace-init into the run directory: the package may live where a sandbox uid cannot
 * reach it (e.g. under /root), and bwrap, running as that uid, must be able to bind it.
 */
function installInit(runDir: string): string {
  const source = nativeBinary();
  if (!existsSync(source))
    throw new SandboxStartError(`${source} is missing: run ./install.sh (or npm run build)`);
  const target = join(runDir, 'carapace-init');
  const s = statSync(source);
  const t = existsSync(target) ? statSync(target) : null;
  if (!t || t.size !== s.size || t.mtimeMs < s.mtimeMs) {
    const tmp = `${target}.${process.pid}`;
    copyFileSync(source, tmp);
    chmodSync(tmp, 0o755);
    // rename is atomic: a concurrent start never executes a half-written init.
    renameSync(tmp, target);
  }
  return target;
}
