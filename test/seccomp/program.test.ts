/**
 * What the generated program answers, checked with the reference interpreter for both architectures
 * (this host cannot execute aarch64). execution.test.ts checks the same program in real processes.
 */
import { describe, expect, it } from 'vitest';
import { decodeProgram, disassemble } from '../../src/sandbox/seccomp/assembler.js';
import { AUDIT_ARCH, ERRNO, SECCOMP_RET, retErrno } from '../../src/sandbox/seccomp/bpf.js';
import { DENYLIST, type ArgCondition, type DenyRule } from '../../src/sandbox/seccomp/denylist.js';
import { buildSeccompProgram, SeccompPolicyError } from '../../src/sandbox/seccomp/index.js';
import { compileDenylist } from '../../src/sandbox/seccomp/program.js';
import { SYSCALL_TABLES, hostArch, type SeccompArch } from '../../src/sandbox/seccomp/syscall-tables.js';
import { runFilter } from './helpers/bpf-emulator.js';

const ALLOW = SECCOMP_RET.ALLOW;
const EPERM = retErrno(ERRNO.EPERM);
const ENOSYS = retErrno(ERRNO.ENOSYS);
const KILL = SECCOMP_RET.KILL_PROCESS;

/** A 32-bit value that satisfies the condition. */
function satisfying(c: ArgCondition): number {
  if ('anyBits' in c) return c.anyBits & -c.anyBits;
  if ('equals' in c) return c.equals;
  if ('notEquals' in c) return (c.notEquals + 1) >>> 0;
  let v = 2;
  while (c.noneOf.includes(v)) v++;
  return v;
}

function argsFor(rule: DenyRule, high = 0n): bigint[] {
  const args = [0n, 0n, 0n, 0n, 0n, 0n].map((a) => a | (high << 32n));
  for (const c of rule.when ?? []) args[c.arg] = BigInt(satisfying(c)) | (high << 32n);
  return args;
}

describe.each(['x86_64', 'aarch64'] as const)('the %s program', (arch: SeccompArch) => {
  const table = SYSCALL_TABLES[arch];
  const built = buildSeccompProgram({ arch });
  const program = decodeProgram(built.bytes);
  const run = (name: string | number, args: bigint[] = [], auditArch = table.auditArch): number => {
    const nr = typeof name === 'number' ? name : table.numbers[name]!;
    return runFilter(program, { nr, arch: auditArch, args });
  };

  it('starts by checking the architecture constant and kills any other ABI', () => {
    expect(program[0]).toMatchObject({ k: 4 }); // ld seccomp_data.arch
    expect(program[1]).toMatchObject({ k: arch === 'x86_64' ? 0xc000003e : 0xc00000b7 });
    expect(built.bytes.readUInt32LE(12)).toBe(AUDIT_ARCH[arch]);
    const other = arch === 'x86_64' ? AUDIT_ARCH.aarch64 : AUDIT_ARCH.x86_64;
    for (const foreign of [other, 0x40000003 /* i386 */, 0x40000028 /* arm */, 0]) {
      expect(run(39, [], foreign)).toBe(KILL);
    }
  });

  it('answers every rule of the denylist with its errno, whatever the upper halves hold', () => {
    let checked = 0;
    for (const rule of DENYLIST) {
      if (table.absent.has(rule.syscall)) continue;
      const expected = retErrno(ERRNO[rule.errno]);
      expect({ rule: rule.syscall, when: rule.when, got: run(rule.syscall, argsFor(rule)) }).toEqual({
        rule: rule.syscall,
        when: rule.when,
        got: expected,
      });
      for (const high of [1n, 0xffffffffn]) expect(run(rule.syscall, argsFor(rule, high))).toBe(expected);
      checked++;
    }
    expect(checked).toBe(built.rules);
  });

  it('lets the harmless forms of argument-checked calls through', () => {
    const cases: [string, bigint[]][] = [
      ['clone', [0x11n /* SIGCHLD */]],
      ['clone', [0x3d0f00n /* pthread_create's flags */]],
      ['clone', [0x80n /* exit signal 128: the bit CLONE_NEWTIME has in unshare */]],
      ['unshare', [0x400n /* CLONE_FILES */]],
      ['execveat', [0n, 0n, 0n, 0n, 0x100n /* AT_SYMLINK_NOFOLLOW */]],
      ['socket', [2n, 1n, 0n]],
      ['socket', [10n, 2n, 17n]],
      ['socket', [1n, 1n, 0n]],
      ['socket', [16n, 3n, 0n]],
      ['socketpair', [1n, 1n, 0n]],
      ['ioctl', [1n, 0x541bn /* FIONREAD */]],
      ['ioctl', [1n, 0x5401n /* TCGETS */]],
      ['personality', [0xffffffffn]],
      ['personality', [0n]],
      ['personality', [8n]],
      ['seccomp', [2n /* GET_ACTION_AVAIL */]],
      ['prctl', [21n /* PR_GET_SECCOMP */]],
      ['prctl', [38n /* PR_SET_NO_NEW_PRIVS */]],
      ['prctl', [22n, 1n /* PR_SET_SECCOMP, SECCOMP_MODE_STRICT */]],
      ['seccomp', [0n /* SECCOMP_SET_MODE_STRICT */]],
    ];
    for (const [name, args] of cases)
      expect({ name, args, got: run(name, args) }).toEqual({ name, args, got: ALLOW });
    for (const nr of [0, 1, 2, 39, 59, 60, 63, 64, 93, 94, 172, 221, 260, 500]) {
      if (Object.values(table.numbers).includes(nr)) continue;
      expect(run(nr)).toBe(ALLOW);
    }
  });

  it('denies the calls the issue names, with the errno it asks for', () => {
    expect(run('clone3')).toBe(ENOSYS);
    expect(run('clone', [0x10000000n | 0x11n])).toBe(EPERM); // CLONE_NEWUSER
    expect(run('unshare', [0x40000000n])).toBe(EPERM); // CLONE_NEWNET
    expect(run('unshare', [0x80n])).toBe(EPERM); // CLONE_NEWTIME
    expect(run('execveat', [3n, 0n, 0n, 0n, 0x1000n])).toBe(EPERM);
    expect(run('socket', [17n, 3n, 0n])).toBe(EPERM); // AF_PACKET
    expect(run('socket', [(1n << 32n) | 17n, 3n, 0n])).toBe(EPERM); // the kernel sees an int: 17
    expect(run('socket', [16n, 3n, 9n])).toBe(EPERM); // NETLINK_AUDIT
    expect(run('socket', [16n, 3n, 15n])).toBe(EPERM); // NETLINK_KOBJECT_UEVENT
    expect(run('ioctl', [0n, 0x5412n])).toBe(EPERM); // TIOCSTI
    expect(run('personality', [0x40000n])).toBe(EPERM); // ADDR_NO_RANDOMIZE
  });

  if (arch === 'x86_64') {
    it('kills x32 syscall numbers and leaves negative numbers to the kernel', () => {
      expect(run(0x40000000 | 39)).toBe(KILL);
      expect(run(0x40000000 | 101)).toBe(KILL);
      expect(run(0x7fffffff)).toBe(KILL);
      expect(run(0xffffffff)).toBe(ALLOW); // -1: the kernel answers ENOSYS
      expect(run(0x80000000)).toBe(ALLOW);
    });
  } else {
    it('has no x32 check and skips the calls arm64 never had', () => {
      expect(run(0x40000000 | 39)).toBe(ALLOW);
      for (const name of ['iopl', 'ioperm', 'uselib', '_sysctl'])
        expect(built.deniedSyscalls).not.toContain(name);
    });
  }

  it('reports what it contains', () => {
    expect(built.instructions).toBe(program.length);
    expect(built.bytes.length).toBe(8 * built.instructions);
    expect(built.instructions).toBeLessThan(400);
    expect(built.deniedSyscalls).toEqual(
      expect.arrayContaining(['ptrace', 'bpf', 'clone3', 'socket', 'ioctl']),
    );
    expect(new Set(built.deniedSyscalls).size).toBe(built.deniedSyscalls.length);
    expect(disassemble(program).at(-1)).toMatch(/ret #0x80000000/);
  });

  it('means the same when every branch goes through trampolines', () => {
    const tight = compileDenylist(table, DENYLIST, { maxCondOffset: 1 }).program;
    expect(tight.length).toBeGreaterThan(program.length);
    for (const rule of DENYLIST) {
      if (table.absent.has(rule.syscall)) continue;
      const data = { nr: table.numbers[rule.syscall]!, arch: table.auditArch, args: argsFor(rule) };
      expect(runFilter(tight, data)).toBe(runFilter(program, data));
      expect(runFilter(tight, { ...data, args: [] })).toBe(runFilter(program, { ...data, args: [] }));
    }
    expect(runFilter(tight, { nr: 0x40000027, arch: table.auditArch })).toBe(
      arch === 'x86_64' ? KILL : ALLOW,
    );
    expect(runFilter(tight, { nr: 39, arch: 0 })).toBe(KILL);
  });
});

describe('buildSeccompProgram', () => {
  it("defaults to the host's architecture", () => {
    const host = hostArch();
    if (host) expect(buildSeccompProgram().bytes).toEqual(buildSeccompProgram({ arch: host }).bytes);
  });

  it('is deterministic', () => {
    expect(buildSeccompProgram({ arch: 'aarch64' }).bytes).toEqual(
      buildSeccompProgram({ arch: 'aarch64' }).bytes,
    );
  });

  it('refuses an unknown architecture and a rule naming a call the table does not have', () => {
    expect(() => buildSeccompProgram({ arch: 'riscv64' as SeccompArch })).toThrow(SeccompPolicyError);
    const typo: DenyRule = { syscall: 'ptrase', errno: 'EPERM', why: 'typo' };
    expect(() => compileDenylist(SYSCALL_TABLES.x86_64, [typo])).toThrow(
      /"ptrase" is not in the x86_64 table/,
    );
    const mixed: DenyRule[] = [
      { syscall: 'ioctl', errno: 'EPERM', why: 'all' },
      { syscall: 'ioctl', when: [{ arg: 1, equals: 1 }], errno: 'EPERM', why: 'some' },
    ];
    expect(() => compileDenylist(SYSCALL_TABLES.x86_64, mixed)).toThrow(/unconditional rule and other rules/);
    const badArg: DenyRule = { syscall: 'ioctl', when: [{ arg: 6, equals: 1 }], errno: 'EPERM', why: 'x' };
    expect(() => compileDenylist(SYSCALL_TABLES.x86_64, [badArg])).toThrow(/argument index 6/);
  });
});
