/**
 * The generated program in real processes: bubblewrap installs it (`--seccomp 3`) in a sandbox run as
 * an unprivileged uid, and Python's ctypes makes each call. Every denied call is compared with the
 * same call in the same sandbox without the filter, so that a test cannot pass because the sandbox
 * alone refused it. The probes use x86_64 numbers, so these tests run on x86_64 hosts.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { BpfAssembler, encodeProgram, NEXT } from '../../src/sandbox/seccomp/assembler.js';
import { AUDIT_ARCH, SECCOMP_DATA, SECCOMP_RET, retErrno } from '../../src/sandbox/seccomp/bpf.js';
import { DENYLIST } from '../../src/sandbox/seccomp/denylist.js';
import { buildSeccompProgram } from '../../src/sandbox/seccomp/index.js';
import { compileDenylist } from '../../src/sandbox/seccomp/program.js';
import { SYSCALL_TABLES } from '../../src/sandbox/seccomp/syscall-tables.js';
import { ALLOWED_PROBES, DENIED_PROBES, type DeniedProbe } from './helpers/probes.js';
import { runInSandbox, runProbes, type ProbeResult } from './helpers/sandbox.js';

const ERRNO_OF = { EPERM: 1, ENOSYS: 38 } as const;
const SIGSYS = 31;

function outcome(r: ProbeResult): string {
  if (r.signal !== null) return `signal ${r.signal}`;
  if (r.ret === 'exec') return 'exec';
  if (typeof r.ret === 'number' && r.ret >= 0) return 'ok';
  return `errno ${r.errno}`;
}

function expected(probe: DeniedProbe): string {
  return probe.expect === 'SIGSYS' ? `signal ${SIGSYS}` : `errno ${ERRNO_OF[probe.expect]}`;
}

describe.runIf(process.arch === 'x64')('the seccomp program in a real sandbox', () => {
  const program = buildSeccompProgram().bytes;
  let baseline: ProbeResult[] = [];
  let filtered: ProbeResult[] = [];

  beforeAll(async () => {
    [baseline, filtered] = await Promise.all([
      runProbes(null, DENIED_PROBES),
      runProbes(program, DENIED_PROBES),
    ]);
  });

  it('probes every syscall the x86_64 program denies', () => {
    const probed = new Set(DENIED_PROBES.map((p) => p.syscall));
    expect(buildSeccompProgram({ arch: 'x86_64' }).deniedSyscalls.filter((s) => !probed.has(s))).toEqual([]);
  });

  it.each(DENIED_PROBES.map((p, i) => [p.name, i] as const))('refuses %s', (_name, i) => {
    const probe = DENIED_PROBES[i]!;
    const without = outcome(baseline[i]!);
    const withFilter = outcome(filtered[i]!);
    expect({ probe: probe.name, withFilter }).toEqual({ probe: probe.name, withFilter: expected(probe) });
    // Without the filter the kernel answers differently, so the answer above is the filter's. The
    // few calls the kernel refuses on privilege before it reads any argument (`gated`) cannot show
    // that here; program.test.ts shows the program denies them.
    if (!probe.gated) {
      expect({ probe: probe.name, without }).not.toEqual({ probe: probe.name, without: expected(probe) });
    }
  });

  it('lets ordinary calls through: fork, sockets of allowed families, exec, harmless flags', async () => {
    const results = await runProbes(program, ALLOWED_PROBES);
    const got = results.map((r, i) => {
      const probe = ALLOWED_PROBES[i]!;
      const ok =
        probe.ok === 'exec'
          ? r.ret === 'exec'
          : probe.ok === 'ENOSYS'
            ? r.ret === -1 && r.errno === 38
            : typeof r.ret === 'number' && r.ret >= 0;
      return { probe: probe.name, ok, result: r };
    });
    expect(got.filter((g) => !g.ok)).toEqual([]);
    expect(results.find((r) => r.name === 'prctl(PR_GET_SECCOMP)')?.ret).toBe(2); // SECCOMP_MODE_FILTER
  });

  it('runs Python with threads and subprocesses, and a shell pipeline', async () => {
    const script = [
      'import threading, subprocess, os',
      'out = []',
      't = threading.Thread(target=lambda: out.append(os.getpid()))',
      't.start(); t.join()',
      "p = subprocess.run(['/bin/sh', '-c', 'echo hello | tr a-z A-Z | cat'], capture_output=True, text=True)",
      'print(len(out), p.returncode, p.stdout.strip())',
    ].join('\n');
    const r = await runInSandbox(program, ['/usr/bin/python3', '-c', script]);
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe('1 0 HELLO');
    expect(r.status).toBe(0);
  });

  it.each([
    ['libuv defaults', '0'],
    ['libuv asked to use io_uring', '1'],
  ])('runs Node (%s): child processes, worker threads, file I/O, loopback TCP', async (_label, uring) => {
    const script = `
      const { execFileSync, spawnSync } = require('node:child_process');
      const { Worker } = require('node:worker_threads');
      const fs = require('node:fs/promises');
      const net = require('node:net');
      const os = require('node:os');
      (async () => {
        const piped = execFileSync('/bin/sh', ['-c', 'echo node | tr a-z A-Z']).toString().trim();
        const child = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(6 * 7))']).stdout.toString();
        const fromWorker = await new Promise((resolve, reject) => {
          const w = new Worker('require("node:worker_threads").parentPort.postMessage(21 * 2)', { eval: true });
          w.once('message', resolve);
          w.once('error', reject);
        });
        await fs.writeFile('/tmp/x', 'written');
        const read = await fs.readFile('/tmp/x', 'utf8');
        const echoed = await new Promise((resolve, reject) => {
          const server = net.createServer((s) => s.pipe(s)).listen(0, '127.0.0.1', () => {
            const c = net.connect(server.address().port, '127.0.0.1', () => c.end('tcp'));
            c.on('data', (d) => { resolve(d.toString()); server.close(); });
            c.on('error', reject);
          });
        });
        const interfaces = Object.keys(os.networkInterfaces()).join(',');
        const seccomp = (await fs.readFile('/proc/self/status', 'utf8')).match(/Seccomp:\\s+(\\d)/)[1];
        console.log(JSON.stringify({ piped, child, fromWorker, read, echoed, interfaces, seccomp }));
      })().catch((e) => { console.error(e); process.exit(1); });
    `;
    const r = await runInSandbox(program, [
      '/usr/bin/env',
      `UV_USE_IO_URING=${uring}`,
      '/usr/bin/node',
      '-e',
      script,
    ]);
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout)).toEqual({
      piped: 'NODE',
      child: '42',
      fromWorker: 42,
      read: 'written',
      echoed: 'tcp',
      interfaces: 'lo',
      seccomp: '2', // SECCOMP_MODE_FILTER: the program is installed
    });
    expect(r.status).toBe(0);
  });

  it('behaves the same with trampolines on every branch', async () => {
    const tight = encodeProgram(
      compileDenylist(SYSCALL_TABLES.x86_64, DENYLIST, { maxCondOffset: 1 }).program,
    );
    const results = await runProbes(tight, DENIED_PROBES);
    expect(results.map((r) => outcome(r))).toEqual(DENIED_PROBES.map(expected));
    const allowed = await runProbes(tight, ALLOWED_PROBES);
    expect(allowed.map((r) => r.signal ?? r.errno)).toEqual(
      ALLOWED_PROBES.map((p) => (p.ok === 'ENOSYS' ? 38 : 0)),
    );
  });
});

describe.runIf(process.arch === 'x64')('a long-jump program in a real sandbox', () => {
  it('reaches targets more than 255 instructions away through trampolines', async () => {
    const GETPPID = 110;
    const GETTID = 186;
    const asm = new BpfAssembler()
      .load(SECCOMP_DATA.arch)
      .jeq(AUDIT_ARCH.x86_64, NEXT, 'kill') // false branch far
      .load(SECCOMP_DATA.nr)
      .jeq(GETPPID, 'exdev') // true branch far
      .jeq(GETTID, 'enotty', 'allow'); // both far
    for (let i = 0; i < 300; i++) asm.load(SECCOMP_DATA.nr); // never reached
    const prog = asm
      .ret(SECCOMP_RET.KILL_PROCESS)
      .label('allow')
      .ret(SECCOMP_RET.ALLOW)
      .label('exdev')
      .ret(retErrno(18))
      .label('enotty')
      .ret(retErrno(25))
      .label('kill')
      .ret(SECCOMP_RET.KILL_PROCESS)
      .assemble();
    expect(prog.filter((f) => f.code === 0x05 /* ja */)).toHaveLength(4);

    const script = [
      'import ctypes, os',
      'libc = ctypes.CDLL(None, use_errno=True)',
      'def call(nr):',
      '    r = libc.syscall(nr)',
      '    return "ok" if r >= 0 else "errno %d" % ctypes.get_errno()',
      `print(call(${GETPPID}), call(${GETTID}), call(39), os.getcwd())`,
    ].join('\n');
    const r = await runInSandbox(encodeProgram(prog), ['/usr/bin/python3', '-c', script]);
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe('errno 18 errno 25 ok /');
  });
});
