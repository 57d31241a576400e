/**
 * What this host can do, probed once at the start of a test run (vitest's globalSetup) and handed
 * to every test file through `inject('hostPremises')`. A test whose premise the host lacks is
 * skipped with the reason (see premises.ts); nothing here assumes this machine's kernel is every
 * user's.
 *
 * Each probe is the smallest thing that shows the capability on the host itself, as the user a
 * baseline runs as (an unprivileged uid when the suite runs as root).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readlinkSync } from 'node:fs';
import { join, resolve } from 'node:path';

/** The built CLI (as test/helpers/cli.ts has it; not imported, to keep the probe's imports few). */
const CLI = join(resolve(import.meta.dirname, '..', '..'), 'dist', 'cli', 'carapace.js');

export const PREMISE_NAMES = [
  'root',
  'x86_64',
  'i386-entry',
  'ptrace-child',
  'unprivileged-userns',
  'clone3',
  'landlock',
  'landlock-abi-4',
  'landlock-abi-6',
  'core-file',
  'setcap',
  'tmux',
  'cap-sys-resource',
  'merged-usr',
  'proc-children',
  'checkout-reachable',
] as const;
export type PremiseName = (typeof PREMISE_NAMES)[number];

export interface PremiseResult {
  holds: boolean;
  /** Why it holds or not, in words a reader of the skip list understands. */
  detail: string;
}
export type HostPremises = Record<PremiseName, PremiseResult>;

const NOBODY = 65534;
const asRoot = process.getuid?.() === 0;

/** Runs a Python snippet on the host as the baseline user; its stdout, trimmed ('' on failure). */
function python(body: string): { out: string; status: number | null; signal: string | null } {
  const r = spawnSync(
    'python3',
    ['-c', `import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n${body}`],
    {
      encoding: 'utf8',
      timeout: 20_000,
      cwd: '/',
      env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C.UTF-8' },
      ...(asRoot ? { uid: NOBODY, gid: NOBODY } : {}),
    },
  );
  return { out: String(r.stdout ?? '').trim(), status: r.status, signal: r.signal };
}

const result = (holds: boolean, detail: string): PremiseResult => ({ holds, detail });

function landlockAbi(): number {
  const r = python('print(libc.syscall(444, None, 0, 1))'); // landlock_create_ruleset(VERSION)
  const n = Number(r.out);
  return Number.isInteger(n) && n > 0 ? n : 0;
}

function readTrimmed(path: string): string | null {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return null;
  }
}

export function probeHost(): HostPremises {
  const x64 = process.arch === 'x64';
  const abi = landlockAbi();

  // mov eax, 20 (i386 getpid); int 0x80; ret: a kernel without IA32 emulation faults (SIGSEGV).
  const i386 = x64
    ? python(
        [
          'import mmap',
          'buf = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)',
          'buf.write(bytes([0xb8, 20, 0, 0, 0, 0xcd, 0x80, 0xc3]))',
          'addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))',
          'print(ctypes.CFUNCTYPE(ctypes.c_int)(addr)() == os.getpid())',
        ].join('\n'),
      )
    : null;

  const yama = readTrimmed('/proc/sys/kernel/yama/ptrace_scope');
  const userns = python('print(libc.unshare(0x10000000), ctypes.get_errno())'); // CLONE_NEWUSER
  const clone3 = python('r = libc.syscall(435, None, 0); print(r, ctypes.get_errno())');
  const corePattern = readTrimmed('/proc/sys/kernel/core_pattern');
  const setcap = ['/usr/sbin/setcap', '/sbin/setcap', '/usr/bin/setcap'].find((p) => existsSync(p));
  let binLink: string | null = null;
  try {
    binLink = readlinkSync('/bin');
  } catch {
    binLink = null;
  }
  // CAP_SYS_RESOURCE (bit 24) in the suite's own effective set: a container may drop it from root.
  const capEff = /^CapEff:\s*([0-9a-f]+)$/m.exec(readTrimmed('/proc/self/status') ?? '')?.[1];
  const sysResource = capEff !== undefined && (BigInt(`0x${capEff}`) & (1n << 24n)) !== 0n;
  // The built CLI run by an unprivileged uid: a checkout under a private directory (/root) is not.
  const reachable = spawnSync(process.execPath, [CLI, '--version'], {
    ...(asRoot ? { uid: NOBODY, gid: NOBODY } : {}),
    encoding: 'utf8',
  });

  return {
    root: result(asRoot, asRoot ? 'the tests run as root' : `the tests run as uid ${process.getuid?.()}`),
    x86_64: result(x64, `the host is ${process.arch}`),
    'i386-entry': result(
      i386?.out === 'True',
      !x64
        ? 'not an x86-64 host'
        : i386?.out === 'True'
          ? 'int 0x80 answers on the host'
          : `int 0x80 does not answer on the host (kernel without IA32 emulation: ${i386?.signal ?? `exit ${i386?.status}`})`,
    ),
    'ptrace-child': result(
      yama === null || Number(yama) <= 1,
      yama === null ? 'no Yama LSM' : `Yama ptrace_scope is ${yama}`,
    ),
    'unprivileged-userns': result(
      userns.out.startsWith('0 '),
      userns.out.startsWith('0 ')
        ? 'an unprivileged user can create a user namespace'
        : `an unprivileged user cannot create a user namespace (unshare: ${userns.out || 'no answer'})`,
    ),
    clone3: result(
      clone3.out === '-1 22',
      clone3.out === '-1 22'
        ? 'clone3 answers EINVAL to an empty call'
        : `clone3 answers "${clone3.out}" (expected -1 EINVAL: an old kernel or a host seccomp filter)`,
    ),
    landlock: result(abi >= 1, abi >= 1 ? `Landlock ABI ${abi}` : 'no Landlock'),
    'landlock-abi-4': result(abi >= 4, `Landlock ABI ${abi} (TCP rules need 4)`),
    'landlock-abi-6': result(abi >= 6, `Landlock ABI ${abi} (signal and abstract-socket scoping need 6)`),
    'core-file': result(
      corePattern === 'core',
      `kernel.core_pattern is "${corePattern ?? '?'}" (the baseline needs a plain "core" file)`,
    ),
    setcap: result(setcap !== undefined, setcap ? `${setcap}` : 'no setcap binary (libcap2-bin)'),
    'proc-children': result(
      existsSync(`/proc/${process.pid}/task/${process.pid}/children`),
      existsSync(`/proc/${process.pid}/task/${process.pid}/children`)
        ? '/proc/<pid>/task/<tid>/children lists a thread’s children'
        : 'no /proc/<pid>/task/<tid>/children (a kernel without CONFIG_PROC_CHILDREN): a sandbox’s usage counts its init alone',
    ),
    tmux: result(
      spawnSync('tmux', ['-V']).status === 0,
      'tmux drives the terminal tests (./install.sh installs it)',
    ),
    'cap-sys-resource': result(
      sysResource,
      sysResource
        ? 'the suite holds CAP_SYS_RESOURCE'
        : 'the suite lacks CAP_SYS_RESOURCE (root in a container that dropped it), so it cannot lower an oom_score_adj',
    ),
    'merged-usr': result(
      binLink !== null && binLink.replace(/^\//, '') === 'usr/bin',
      binLink === null ? '/bin is not a symlink (/usr is not merged)' : `/bin → ${binLink}`,
    ),
    'checkout-reachable': result(
      reachable.status === 0,
      reachable.status === 0
        ? `an unprivileged uid runs ${CLI}`
        : `an unprivileged uid cannot run ${CLI} (a checkout under a private directory, or not built): ${String(reachable.stderr).trim().split('\n')[0] ?? ''}`,
    ),
  };
}
