/**
 * Compiles a denylist (denylist.ts) for one architecture into a seccomp BPF program.
 *
 * Layout, top to bottom:
 *
 *     ld  arch            ; anything but the native ABI is killed
 *     jeq AUDIT_ARCH, next, kill
 *     ld  nr
 *     jset 0x40000000 → kill            (x86_64 only: the x32 ABI; negative numbers skip this)
 *     jeq nr(ptrace) → eperm            ; one line per syscall with a rule, in denylist order
 *     jeq nr(clone)  → sys:clone        ; syscalls whose rules look at arguments get a block below
 *     …
 *     ret ALLOW
 *   sys:clone:                          ; each rule: its conditions, each failing to the next rule
 *     ld  args[0].low
 *     jset CLONE_NEW*, eperm, allow
 *   eperm:  ret ERRNO|EPERM
 *   enosys: ret ERRNO|ENOSYS
 *   kill:   ret KILL_PROCESS
 *
 * A linear chain costs nothing for the calls a program makes most: since Linux 5.11 the kernel
 * evaluates the filter once per syscall number, and caches "allow" for every number whose answer does
 * not depend on arguments, so read/write/mmap never run the filter at all.
 */
import { BpfAssembler, MAX_COND_OFFSET, NEXT, type SockFilter, type Target } from './assembler.js';
import { ERRNO, SECCOMP_DATA, SECCOMP_RET, X32_SYSCALL_BIT, retErrno } from './bpf.js';
import type { ArgCondition, DenyErrno, DenyRule } from './denylist.js';
import type { SyscallTable } from './syscall-tables.js';

export class SeccompPolicyError extends Error {
  override name = 'SeccompPolicyError';
}

export interface CompiledFilter {
  program: SockFilter[];
  /** Syscalls with at least one rule on this architecture, in denylist order. */
  deniedSyscalls: string[];
  /** Rules that apply on this architecture. */
  rules: number;
}

export interface CompileOptions {
  /** For tests: a smaller limit forces the assembler's long-jump path on the real program. */
  maxCondOffset?: number;
}

const RET_LABEL: Record<DenyErrno, string> = { EPERM: 'eperm', ENOSYS: 'enosys' };

export function compileDenylist(
  table: SyscallTable,
  denylist: readonly DenyRule[],
  opts: CompileOptions = {},
): CompiledFilter {
  const groups = groupBySyscall(table, denylist);
  const asm = new BpfAssembler();

  asm.load(SECCOMP_DATA.arch).jeq(table.auditArch, NEXT, 'kill');
  asm.load(SECCOMP_DATA.nr);
  if (table.hasX32) {
    // x32 numbers are 0x40000000 + n. Negative numbers (bit 31) reach no table at all, and -1 is what
    // a debugger writes to skip a call: the kernel answers ENOSYS for those, so they pass through.
    asm.jge(0x80000000, 'syscalls').jset(X32_SYSCALL_BIT, 'kill').label('syscalls');
  }

  for (const [name, rules] of groups) {
    const nr = table.numbers[name]!;
    const unconditional = rules.find((r) => !r.when || r.when.length === 0);
    asm.jeq(nr, unconditional ? RET_LABEL[unconditional.errno] : `sys:${name}`);
  }
  asm.ret(SECCOMP_RET.ALLOW);

  for (const [name, rules] of groups) {
    if (rules.some((r) => !r.when || r.when.length === 0)) continue;
    asm.label(`sys:${name}`);
    rules.forEach((rule, i) => {
      const fail = i + 1 < rules.length ? `sys:${name}:${i + 1}` : 'allow';
      if (i > 0) asm.label(`sys:${name}:${i}`);
      const conds = rule.when ?? [];
      conds.forEach((cond, c) => {
        const pass = c + 1 < conds.length ? NEXT : RET_LABEL[rule.errno];
        emitCondition(asm, cond, pass, fail);
      });
    });
  }

  asm.label('allow').ret(SECCOMP_RET.ALLOW);
  asm.label('eperm').ret(retErrno(ERRNO.EPERM));
  asm.label('enosys').ret(retErrno(ERRNO.ENOSYS));
  asm.label('kill').ret(SECCOMP_RET.KILL_PROCESS);

  return {
    program: asm.assemble(opts.maxCondOffset ?? MAX_COND_OFFSET),
    deniedSyscalls: [...groups.keys()],
    rules: [...groups.values()].reduce((n, rules) => n + rules.length, 0),
  };
}

/** Goes to `pass` when the condition holds and to `fail` when it does not. */
function emitCondition(asm: BpfAssembler, cond: ArgCondition, pass: Target, fail: string): void {
  if (!Number.isInteger(cond.arg) || cond.arg < 0 || cond.arg > 5) {
    throw new SeccompPolicyError(`argument index ${cond.arg} is not 0..5`);
  }
  asm.load(SECCOMP_DATA.argLow(cond.arg));
  if ('anyBits' in cond) {
    asm.jset(cond.anyBits, pass, fail);
  } else if ('equals' in cond) {
    asm.jeq(cond.equals, pass, fail);
  } else if ('notEquals' in cond) {
    asm.jeq(cond.notEquals, fail, pass);
  } else {
    cond.noneOf.forEach((k, i) => asm.jeq(k, fail, i + 1 < cond.noneOf.length ? NEXT : pass));
  }
}

/**
 * Rules grouped by syscall, in the order each syscall first appears; syscalls this architecture lacks
 * are dropped. A name in neither the table nor its `absent` list is an error, not a silent no-op.
 */
function groupBySyscall(table: SyscallTable, denylist: readonly DenyRule[]): Map<string, DenyRule[]> {
  const groups = new Map<string, DenyRule[]>();
  for (const rule of denylist) {
    if (table.absent.has(rule.syscall)) continue;
    if (table.numbers[rule.syscall] === undefined) {
      throw new SeccompPolicyError(`syscall "${rule.syscall}" is not in the ${table.arch} table`);
    }
    const group = groups.get(rule.syscall) ?? [];
    group.push(rule);
    groups.set(rule.syscall, group);
  }
  for (const [name, rules] of groups) {
    const unconditional = rules.filter((r) => !r.when || r.when.length === 0);
    if (unconditional.length > 0 && rules.length > 1) {
      throw new SeccompPolicyError(`syscall "${name}" has an unconditional rule and other rules`);
    }
  }
  return groups;
}
