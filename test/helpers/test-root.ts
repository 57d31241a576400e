/**
 * A host root that has not merged /usr, built from this host's own files, for the sandbox to mirror
 * (CARAPACE_HOST_ROOT, docs/testing.md): /bin, /sbin, /lib and /lib64 are real directories, as on
 * Debian before usrmerge. /bin holds copies of dash (as sh) and ls, /lib64 a copy of the ELF
 * interpreter; /usr, /etc and the host's library directory (as /lib/<multiarch>) are this host's,
 * bound read-only in a mount namespace of the run's own, so nothing is mounted on the host.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, realpathSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { CLI, type CliResult } from './cli.js';

/** The x86-64 ELF interpreter every dynamically linked program names. */
export const ELF_INTERPRETER = '/lib64/ld-linux-x86-64.so.2';

export interface TestRoot {
  root: string;
  /** The host directory of the C library, bound at /lib/<its name> in the test root. */
  libDir: string;
}

export function nonMergedRoot(): TestRoot {
  const root = mkdtempSync(join(tmpdir(), 'carapace-root-'));
  chmodSync(root, 0o755);
  const interpreter = realpathSync(ELF_INTERPRETER);
  const libDir = dirname(interpreter);
  for (const d of ['usr', 'etc', 'bin', 'sbin', 'lib64', join('lib', basename(libDir))]) {
    mkdirSync(join(root, d), { recursive: true, mode: 0o755 });
  }
  copyFileSync(realpathSync('/bin/dash'), join(root, 'bin', 'dash'));
  copyFileSync(realpathSync('/bin/ls'), join(root, 'bin', 'ls'));
  symlinkSync('dash', join(root, 'bin', 'sh'));
  copyFileSync(interpreter, join(root, 'lib64', basename(ELF_INTERPRETER)));
  for (const f of ['bin/dash', 'bin/ls', 'lib64/' + basename(ELF_INTERPRETER)])
    chmodSync(join(root, f), 0o755);
  return { root, libDir };
}

/** The binds, made in the run's own mount namespace, then the CLI (positional, no interpolation). */
const IN_NAMESPACE = [
  'root=$1; lib=$2; shift 2',
  'mount --bind -o ro /usr "$root/usr"',
  'mount --bind -o ro /etc "$root/etc"',
  'mount --bind -o ro "$lib" "$root/lib/${lib##*/}"',
  'exec "$@"',
].join('\n');

/** `carapace run ARGS` with the sandbox mirroring `root` instead of the host's `/`. */
export function runInTestRoot(root: TestRoot, args: string[], home: string): CliResult {
  const r = spawnSync(
    'unshare',
    [
      '--mount',
      '--propagation',
      'private',
      '--',
      'sh',
      '-euc',
      IN_NAMESPACE,
      'sh',
      root.root,
      root.libDir,
      process.execPath,
      CLI,
      'run',
      ...args,
    ],
    {
      encoding: 'utf8',
      timeout: 120_000,
      env: { ...process.env, CARAPACE_HOME: home, CARAPACE_HOST_ROOT: root.root },
    },
  );
  return { status: r.status, stdout: String(r.stdout), stderr: String(r.stderr) };
}
