/**
 * carapace-init installs the seccomp program it reads from --seccomp-fd. The real program comes
 * from src/sandbox/seccomp/; here a small hand-built one (arch check, getppid -> EPERM, allow the
 * rest) shows that the bytes are read whole and enforced on the agent.
 */
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { events, FIRST_EXTRA_FD, python, runSandbox, USUAL_PATHS, type SandboxResult } from './harness.js';

const BPF_LD_W_ABS = 0x20;
const BPF_JMP_JEQ_K = 0x15;
const BPF_RET_K = 0x06;
const SECCOMP_RET_KILL_PROCESS = 0x80000000;
const SECCOMP_RET_ERRNO = 0x00050000;
const SECCOMP_RET_ALLOW = 0x7fff0000;
const EPERM = 1;

const ARCH: Record<string, { audit: number; getppid: number }> = {
  x64: { audit: 0xc000003e, getppid: 110 },
  arm64: { audit: 0xc00000b7, getppid: 173 },
};

function instruction(code: number, jt: number, jf: number, k: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt16LE(code, 0);
  b.writeUInt8(jt, 2);
  b.writeUInt8(jf, 3);
  b.writeUInt32LE(k >>> 0, 4);
  return b;
}

function getppidDenied(): Buffer {
  const arch = ARCH[process.arch];
  if (!arch) throw new Error(`no test program for ${process.arch}`);
  return Buffer.concat([
    instruction(BPF_LD_W_ABS, 0, 0, 4), // seccomp_data.arch
    instruction(BPF_JMP_JEQ_K, 1, 0, arch.audit),
    instruction(BPF_RET_K, 0, 0, SECCOMP_RET_KILL_PROCESS),
    instruction(BPF_LD_W_ABS, 0, 0, 0), // seccomp_data.nr
    instruction(BPF_JMP_JEQ_K, 0, 1, arch.getppid),
    instruction(BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | EPERM),
    instruction(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
  ]);
}

const scratch = mkdtempSync(join(tmpdir(), 'carapace-seccomp-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** Runs the sandbox with `program` readable on --seccomp-fd. */
async function withProgram(program: Buffer, command: string[]): Promise<SandboxResult> {
  const file = join(scratch, `program-${Math.random().toString(36).slice(2)}`);
  writeFileSync(file, program);
  const fd = openSync(file, 'r');
  try {
    return await runSandbox({
      init: [...USUAL_PATHS, '--seccomp-fd', String(FIRST_EXTRA_FD)],
      fds: [fd],
      command,
    });
  } finally {
    closeSync(fd);
  }
}

describe('seccomp program from --seccomp-fd', () => {
  it('is enforced on the agent', async () => {
    const nr = ARCH[process.arch]?.getppid ?? -1;
    const script = `import os, ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nprint(libc.syscall(${nr}), ctypes.get_errno(), os.getpid())`;
    const r = await withProgram(getppidDenied(), python(script));
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe(`-1 ${EPERM} 2\n`);
    expect(events(r, 'seccomp')).toEqual([{ event: 'seccomp', installed: true, instructions: 7 }]);
  });

  it('binds everything the agent starts', async () => {
    const r = await withProgram(getppidDenied(), ['sh', '-c', 'python3 -c "import os; print(os.getppid())"']);
    expect(r.stdout).toBe('-1\n');
  });

  it('refuses a program that is not a whole number of instructions', async () => {
    const r = await withProgram(getppidDenied().subarray(0, 12), ['true']);
    expect(r.code).toBe(125);
    const message = 'the program on --seccomp-fd 5 is 12 bytes, not a multiple of 8: Invalid argument';
    expect(r.stderr).toBe(`carapace-init: seccomp: ${message}\n`);
    expect(events(r, 'error')).toEqual([{ event: 'error', step: 'seccomp', errno: 22, message }]);
  });

  it('refuses an empty program', async () => {
    const r = await withProgram(Buffer.alloc(0), ['true']);
    expect(r.code).toBe(125);
    expect(r.stderr).toBe(
      'carapace-init: seccomp: the program on --seccomp-fd 5 is empty: Invalid argument\n',
    );
  });

  it('refuses a program longer than BPF_MAXINSNS', async () => {
    const r = await withProgram(
      Buffer.concat(Array(4097).fill(instruction(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW))),
      ['true'],
    );
    expect(r.code).toBe(125);
    expect(r.stderr).toBe(
      'carapace-init: seccomp: the program on --seccomp-fd 5 is longer than 4096 instructions: Argument list too long\n',
    );
  });

  it('reports a program the kernel rejects, before the agent runs', async () => {
    // A jump past the end of the program.
    const bad = Buffer.concat([
      instruction(BPF_JMP_JEQ_K, 5, 5, 0),
      instruction(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
    ]);
    const r = await withProgram(bad, ['true']);
    expect(r.code).toBe(125);
    expect(r.stderr).toBe('carapace-init: seccomp: install the filter of 2 instructions: Invalid argument\n');
    expect(events(r, 'exec')).toHaveLength(0);
  });
});
