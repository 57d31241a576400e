/**
 * Constants of classic BPF (linux/filter.h, linux/bpf_common.h) and of seccomp (linux/seccomp.h,
 * linux/audit.h) that the generator needs. Values are the kernel's UAPI and never change.
 */

/** Instruction classes, sizes, modes and operations, combined into `sock_filter.code`. */
export const BPF = {
  LD: 0x00,
  ALU: 0x04,
  JMP: 0x05,
  RET: 0x06,
  W: 0x00,
  ABS: 0x20,
  K: 0x00,
  AND: 0x50,
  JA: 0x00,
  JEQ: 0x10,
  JGT: 0x20,
  JGE: 0x30,
  JSET: 0x40,
} as const;

/** The kernel refuses longer programs (BPF_MAXINSNS). */
export const BPF_MAXINSNS = 4096;

/** Bytes per `struct sock_filter { __u16 code; __u8 jt; __u8 jf; __u32 k; }`. */
export const SOCK_FILTER_SIZE = 8;

/**
 * Offsets into `struct seccomp_data { int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6]; }`.
 * Both supported architectures are little-endian, so the low 32 bits of `args[i]` are at `16 + 8i`
 * and the high 32 bits at `20 + 8i`.
 */
export const SECCOMP_DATA = {
  nr: 0,
  arch: 4,
  argLow: (i: number): number => 16 + 8 * i,
  argHigh: (i: number): number => 20 + 8 * i,
} as const;

/** Filter return values. The kernel runs every installed filter and keeps the most severe answer. */
export const SECCOMP_RET = {
  KILL_PROCESS: 0x80000000,
  ERRNO: 0x00050000,
  ALLOW: 0x7fff0000,
} as const;

/** `SECCOMP_RET_ERRNO | errno`: the syscall is not run and returns -errno. */
export function retErrno(errno: number): number {
  return SECCOMP_RET.ERRNO | (errno & 0xffff);
}

/** errno values; identical on x86_64 and aarch64 (asm-generic/errno-base.h, errno.h). */
export const ERRNO = {
  EPERM: 1,
  ENOSYS: 38,
} as const;

/**
 * `seccomp_data.arch`: EM_* | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE. A 64-bit x86 process can still
 * enter the kernel through the i386 entry points (`int $0x80`), which report AUDIT_ARCH_I386 and use
 * i386 numbers; an arm64 process cannot, but arm64 kernels may run 32-bit (AUDIT_ARCH_ARM) tasks.
 */
export const AUDIT_ARCH = {
  x86_64: 0xc000003e,
  aarch64: 0xc00000b7,
} as const;

/** On x86_64, bit 30 of the syscall number selects the x32 ABI (same AUDIT_ARCH, other table). */
export const X32_SYSCALL_BIT = 0x40000000;
