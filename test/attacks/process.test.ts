/**
 * Process-level escapes: tracing, signalling outside or at PID 1, regaining capabilities, new
 * namespaces, the seccomp filter's blind spots (x32 numbers, the i386 entry point, clone3's flags
 * in memory), core dumps, and the agent's environment reaching the host's bwrap or the init. Each baseline runs the same attack where the layer is absent: on
 * the host as an unprivileged uid, or in the sandbox with Landlock capped.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  copyFileSync,
  existsSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { carapace, CLI, freshHome } from '../helpers/cli.js';
import { requires } from '../helpers/premises.js';
import { pySyscall, runInSandbox, runOnHost, sharedTempDir, startInSandbox } from '../helpers/sandbox.js';

const lines = (s: string) => s.trim().split('\n');

describe('tracing', () => {
  const TRACE = [
    'pid = os.fork()',
    'if pid == 0:',
    '    import time; time.sleep(30); os._exit(0)',
    'report(libc.ptrace(16, pid, 0, 0))  # PTRACE_ATTACH a sibling',
    'if os.getpid() != 1 and os.path.exists("/.carapace/init"):',
    '    report(libc.ptrace(16, 1, 0, 0))  # PTRACE_ATTACH the init',
    'os.kill(pid, 9)',
  ].join('\n');

  it('ptrace: a sibling and the init, EPERM', () => {
    expect(lines(runInSandbox(pySyscall(TRACE)).stdout)).toEqual(['EPERM', 'EPERM']);
  });

  it('baseline: on the host the same attach works', (ctx) => {
    requires(ctx, 'root', 'ptrace-child');
    expect(lines(runOnHost(pySyscall(TRACE)).stdout)).toEqual(['ok']);
  });
});

describe('signals', () => {
  it('cannot signal a host process of the very same host uid; kill(-1) stays inside', async () => {
    const home = freshHome();
    const ws = sharedTempDir('carapace-ws-');
    expect(runInSandbox(['true'], ['--name', 'signals', '--workspace', ws], home).status).toBe(0);
    const uid = statSync(ws).uid;
    const victim = spawn('sleep', ['60'], { uid, gid: uid, stdio: 'ignore' });
    try {
      const body = [
        `report(libc.kill(${victim.pid}, 0))`,
        `report(libc.kill(${victim.pid}, 9))`,
        'report(libc.kill(-1, 9))',
        `report(libc.syscall(434, ${victim.pid}, 0))  # pidfd_open`,
      ].join('\n');
      const r = runInSandbox(pySyscall(body), ['--name', 'signals', '--workspace', ws], home);
      // kill(-1) reaches every process of the sandbox but the init and the caller: none here.
      expect(lines(r.stdout)).toEqual(['ESRCH', 'ESRCH', 'ESRCH', 'EPERM']);
      expect(victim.exitCode).toBeNull();
      // Baseline: on the host, the same uid can signal it.
      expect(lines(runOnHost(pySyscall(`report(libc.kill(${victim.pid}, 0))`), uid).stdout)).toEqual(['ok']);
    } finally {
      victim.kill('SIGKILL');
    }
  });

  const AT_INIT = [
    'import signal',
    'got = []',
    'signal.signal(signal.SIGTERM, lambda *a: got.append("SIGTERM"))',
    'for sig in (signal.SIGTERM, signal.SIGKILL, signal.SIGSTOP):',
    '    report(libc.kill(1, int(sig)))',
    'import time',
    'for _ in range(40):  # up to 2 s for a forwarded SIGTERM to come back (a loaded machine)',
    '    if got: break',
    '    time.sleep(0.05)',
    'print("alive", got)',
  ].join('\n');

  it('signals to PID 1: EPERM (Landlock signal scope); without it the kernel still protects the init', (ctx) => {
    requires(ctx, 'landlock-abi-6');
    expect(lines(runInSandbox(pySyscall(AT_INIT)).stdout)).toEqual(['EPERM', 'EPERM', 'EPERM', 'alive []']);
    // Landlock ABI 5 has no signal scoping: the signals are delivered, the init forwards SIGTERM
    // to the agent, and the kernel drops SIGKILL and SIGSTOP sent to a namespace's init from inside.
    const r = carapace(['run', '--', ...pySyscall(AT_INIT)], { env: { CARAPACE_LANDLOCK_ABI_MAX: '5' } });
    expect(lines(r.stdout)).toEqual(['ok', 'ok', 'ok', "alive ['SIGTERM']"]);
    expect(r.status).toBe(0);
  });
});

describe('capabilities', () => {
  it('cannot regain any: capset, setuid(0), setgroups, ambient raise, chown to root all fail', () => {
    const body = [
      'class Hdr(ctypes.Structure): _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]',
      'class Data(ctypes.Structure): _fields_ = [("eff", ctypes.c_uint32), ("prm", ctypes.c_uint32), ("inh", ctypes.c_uint32)]',
      'hdr = Hdr(0x20080522, 0); data = (Data * 2)(Data(~0 & 0xffffffff, ~0 & 0xffffffff, 0), Data(0xff, 0xff, 0))',
      'report(libc.capset(ctypes.byref(hdr), data))',
      'report(libc.setuid(0))',
      'report(libc.setgroups(1, (ctypes.c_uint * 1)(0)))',
      'report(libc.prctl(47, 2, 12, 0, 0))  # PR_CAP_AMBIENT_RAISE CAP_NET_ADMIN',
      'open("/sandbox/f", "w").close()',
      'report(libc.chown(b"/sandbox/f", 0, 0))',
    ].join('\n');
    expect(lines(runInSandbox(pySyscall(body)).stdout)).toEqual([
      'EPERM',
      'EINVAL',
      'EPERM',
      'EPERM',
      'EINVAL',
    ]);
  });

  it('a binary with file capabilities planted in the workspace runs without them', (ctx) => {
    requires(ctx, 'root', 'setcap');
    const home = freshHome();
    const ws = sharedTempDir('carapace-ws-');
    // Named, so the second run does not hand the workspace over (which would drop the xattr).
    expect(runInSandbox(['true'], ['--name', 'fcaps', '--workspace', ws], home).status).toBe(0);
    const RAW = 'attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))';
    const withCaps = (dir: string) => {
      const py = join(dir, 'python-netraw');
      copyFileSync('/usr/bin/python3', py);
      chmodSync(py, 0o755);
      const setcap = runOnHost(['setcap', 'cap_net_raw+ep', py], 0);
      expect(setcap.status).toBe(0);
      return py;
    };
    withCaps(ws);
    const inside = runInSandbox(
      ['/sandbox/python-netraw', '-c', `${pySyscall(RAW)[2]}`],
      ['--name', 'fcaps', '--workspace', ws],
      home,
    );
    expect(inside.stderr).toBe('');
    expect(lines(inside.stdout)).toEqual(['EPERM']);
    // Baseline: the same binary run by an unprivileged host user gets CAP_NET_RAW.
    const hostCopy = withCaps(sharedTempDir());
    expect(lines(runOnHost([hostCopy, '-c', pySyscall(RAW)[2]!]).stdout)).toEqual(['ok']);
  });
});

describe('namespaces', () => {
  const UNSHARE = [
    'for flag in (0x10000000, 0x40000000, 0x00020000, 0x20000000, 0x08000000):  # USER, NET, NS, PID, IPC',
    '    report(libc.unshare(flag))',
    'report(libc.syscall(56, 0x10000000 | 17, 0, 0, 0, 0))  # clone(CLONE_NEWUSER | SIGCHLD)',
  ].join('\n');

  it('unshare and clone with namespace flags: EPERM', (ctx) => {
    requires(ctx, 'x86_64'); // the clone(2) number and argument order below are x86-64's
    expect(lines(runInSandbox(pySyscall(UNSHARE)).stdout)).toEqual(Array(6).fill('EPERM'));
  });

  it('baseline: on the host a user namespace is one call away', (ctx) => {
    requires(ctx, 'root', 'unprivileged-userns');
    const host = runOnHost(pySyscall('report(libc.unshare(0x10000000))'));
    expect(lines(host.stdout)).toEqual(['ok']);
  });

  it('clone3, whose flags seccomp cannot read: ENOSYS (callers fall back to clone)', (ctx) => {
    // Baseline first: on the host clone3 exists (and refuses an empty call with EINVAL).
    requires(ctx, 'x86_64', 'clone3');
    const body = [
      'args = (ctypes.c_uint64 * 11)(0x10000000, 0, 0, 0, 17, 0, 0, 0, 0, 0, 0)  # CLONE_NEWUSER',
      'report(libc.syscall(435, args, 88))',
    ].join('\n');
    expect(lines(runInSandbox(pySyscall(body)).stdout)).toEqual(['ENOSYS']);
  });
});

describe('seccomp blind spots', () => {
  it('an x32 syscall number kills the process (SIGSYS); on the host it is just ENOSYS', (ctx) => {
    requires(ctx, 'x86_64');
    const body = 'report(libc.syscall(0x40000000 | 39))  # x32 getpid';
    const inside = runInSandbox(pySyscall(body));
    expect(inside.status).toBe(128 + 31);
    expect(inside.stdout).toBe('');
    expect(lines(runOnHost(pySyscall(body)).stdout)).toEqual(['ENOSYS']);
  });

  it('the i386 entry point (int 0x80) kills the process; on the host it answers', (ctx) => {
    // Without IA32 emulation the kernel faults int 0x80 before seccomp sees it: nothing to test.
    requires(ctx, 'i386-entry');
    // mov eax, 20 (i386 getpid); int 0x80; ret — run from an executable anonymous page.
    const body = [
      'import mmap',
      'code = bytes([0xb8, 20, 0, 0, 0, 0xcd, 0x80, 0xc3])',
      'buf = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)',
      'buf.write(code)',
      'addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))',
      'print(ctypes.CFUNCTYPE(ctypes.c_int)(addr)() == os.getpid())',
    ].join('\n');
    const inside = runInSandbox(pySyscall(body));
    expect(inside.status).toBe(128 + 31);
    expect(lines(runOnHost(pySyscall(body)).stdout)).toEqual(['True']);
  });
});

describe('core dumps', () => {
  const CRASH = [
    'import os, resource',
    'print(resource.getrlimit(resource.RLIMIT_CORE), flush=True)',
    'try:',
    '    resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))',
    'except (OSError, ValueError):',
    '    print("cannot raise", flush=True)',
    'resource.setrlimit(resource.RLIMIT_CORE, (resource.getrlimit(resource.RLIMIT_CORE)[1],) * 2)',
    'os.abort()',
  ].join('\n');

  it('RLIMIT_CORE is 0 and cannot be raised: a crash leaves no core file in the workspace', () => {
    const ws = sharedTempDir('carapace-ws-');
    const r = runInSandbox(['python3', '-c', CRASH], ['--workspace', ws]);
    expect(r.status).toBe(128 + 6);
    expect(lines(r.stdout)).toEqual(['(0, 0)', 'cannot raise']);
    expect(readdirSync(ws)).toEqual([]);
  });

  // The baseline needs a plain file core_pattern (a pipe hands the dump to a host helper instead).
  it('baseline: the same crash on the host, as an unprivileged uid, writes a core file', (ctx) => {
    requires(ctx, 'root', 'core-file');
    const dir = sharedTempDir();
    chmodSync(dir, 0o777);
    const r = runOnHost(['python3', '-c', CRASH], undefined, dir);
    expect(r.status).toBeNull();
    expect(existsSync(join(dir, 'core'))).toBe(true);
  });
});

describe("the agent's environment", () => {
  // A library that says which program it was loaded into, on stderr, when it is loaded.
  const PRELOAD_C = `
#include <stdio.h>
#include <unistd.h>
__attribute__((constructor)) static void said(void) {
    char exe[256] = "";
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) exe[n] = 0;
    fprintf(stderr, "preloaded into %s\\n", exe);
}`;

  it('--env LD_PRELOAD reaches the agent only: neither bwrap on the host nor the init loads it', () => {
    const ws = sharedTempDir('carapace-ws-');
    const source = join(ws, 'preload.c');
    writeFileSync(source, PRELOAD_C);
    execFileSync('cc', ['-shared', '-fPIC', '-o', join(ws, 'preload.so'), source]);
    chmodSync(join(ws, 'preload.so'), 0o755);
    // The host path for bwrap (the workspace on the host), /sandbox's for anything inside.
    const preload = `${join(ws, 'preload.so')} /sandbox/preload.so`;
    const r = runInSandbox(['/usr/bin/true'], ['--workspace', ws, '--env', `LD_PRELOAD=${preload}`]);
    expect(r.status).toBe(0);
    const loaded = r.stderr.split('\n').filter((l) => l.startsWith('preloaded into'));
    expect(loaded).toEqual(['preloaded into /usr/bin/true']);
  });

  it('a value given with --env is in neither the environment nor the command line of bwrap and the init', async () => {
    const secret = `carapace-secret-${randomBytes(8).toString('hex')}`;
    const run = startInSandbox(['sh', '-c', 'echo ready; sleep 30'], ['--env', `TOKEN=${secret}`]);
    try {
      await run.waitForStdout('ready');
      const bwrap = childrenOf(run.child.pid!).find((pid) =>
        readlinkSync(`/proc/${pid}/exe`).endsWith('bwrap'),
      );
      expect(bwrap).toBeDefined();
      const [init] = childrenOf(bwrap!);
      const [agent] = childrenOf(init!);
      const seen = (pid: number, file: string) => readFileSync(`/proc/${pid}/${file}`).includes(secret);
      // The agent has it (so it was given); the host's bwrap and PID 1 have it nowhere.
      expect(seen(agent!, 'environ')).toBe(true);
      expect({
        bwrapEnviron: seen(bwrap!, 'environ'),
        bwrapCmdline: seen(bwrap!, 'cmdline'),
        initEnviron: seen(init!, 'environ'),
        initCmdline: seen(init!, 'cmdline'),
      }).toEqual({ bwrapEnviron: false, bwrapCmdline: false, initEnviron: false, initCmdline: false });
    } finally {
      run.child.kill('SIGTERM');
      await run.result;
    }
  });
});

/** Pids whose parent is `pid` (read as root from /proc). */
function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pid) out.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

describe('/proc housekeeping', () => {
  // Shells (and the agents that drive them) write their own oom_score_adj on every command.
  it("a shell's write to /proc/self/oom_score_adj succeeds; PID 1's files and /proc/sys stay refused", () => {
    const r = runInSandbox([
      'sh',
      '-c',
      'echo 500 > /proc/self/oom_score_adj && cat /proc/self/oom_score_adj',
    ]);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('500\n');
    const body = [
      'def write(path, text):',
      '    fd = os.open(path, os.O_WRONLY)',
      '    try: os.write(fd, text.encode())',
      '    finally: os.close(fd)',
      'attempt(lambda: write("/proc/1/oom_score_adj", "1000"))',
      'attempt(lambda: write("/proc/1/mem", "x"))',
      'attempt(lambda: write("/proc/sys/kernel/hostname", "x"))',
      'attempt(lambda: write("/proc/self/uid_map", "0 0 1"))',
    ].join('\n');
    expect(lines(runInSandbox(pySyscall(body)).stdout)).toEqual(['EACCES', 'EACCES', 'EACCES', 'EPERM']);
  });

  it('a Carapace protected from the OOM killer does not pass the protection on: the sandbox starts at 0 and cannot go lower', (ctx) => {
    requires(ctx, 'root', 'cap-sys-resource');
    const body = [
      'print(open("/proc/self/oom_score_adj").read().strip())',
      'fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY)',
      'attempt(lambda: os.write(fd, b"-1"))',
    ].join('\n');
    // A service started with OOMScoreAdjust=-500: its children inherit -500, and may go back to it.
    const r = spawnSync(
      'sh',
      [
        '-c',
        'echo -500 > /proc/self/oom_score_adj && exec "$@"',
        'sh',
        process.execPath,
        CLI,
        'run',
        '--',
        ...pySyscall(body),
      ],
      { encoding: 'utf8', env: { ...process.env, CARAPACE_HOME: freshHome() } },
    );
    expect(r.stderr).toBe('');
    expect(lines(r.stdout)).toEqual(['0', 'EACCES']);
  });

  it('known gap: /proc/<pid>/mem of another of the sandbox’s own processes is readable and writable; PID 1’s is not', () => {
    const body = [
      'import subprocess, time',
      'child = subprocess.Popen(["sleep", "30"])',
      'time.sleep(0.2)',
      'attempt(lambda: os.close(os.open(f"/proc/{child.pid}/mem", os.O_RDWR)))',
      'attempt(lambda: os.close(os.open("/proc/1/mem", os.O_RDONLY)))',
      'child.kill()',
    ].join('\n');
    expect(lines(runInSandbox(pySyscall(body)).stdout)).toEqual(['ok', 'EACCES']);
  });
});
