/**
 * The seccomp program every sandbox runs under. carapace-init reads `bytes` from `--seccomp-fd` and
 * installs it after no_new_privs; what it denies and why is in denylist.ts and docs/seccomp.md.
 */
import { encodeProgram } from './assembler.js';
import { DENYLIST } from './denylist.js';
import { compileDenylist, SeccompPolicyError } from './program.js';
import { hostArch, SYSCALL_TABLES, type SeccompArch } from './syscall-tables.js';

export { SeccompPolicyError } from './program.js';
export type { SeccompArch } from './syscall-tables.js';

export interface SeccompOptions {
  /** Architecture of the processes that will run under the program. Default: this host's. */
  arch?: SeccompArch;
}

export interface SeccompProgram {
  /** `struct sock_filter[]`, little-endian, ready for SECCOMP_SET_MODE_FILTER. */
  bytes: Buffer;
  instructions: number;
  /** Syscalls with at least one rule on this architecture (unconditional or by argument). */
  deniedSyscalls: string[];
  /** Rules that apply on this architecture. */
  rules: number;
}

export function buildSeccompProgram(opts: SeccompOptions = {}): SeccompProgram {
  const arch = opts.arch ?? hostArch();
  if (arch === null) {
    throw new SeccompPolicyError(
      `no seccomp program for this host's architecture (${process.arch}); supported: x86_64, aarch64`,
    );
  }
  const table = SYSCALL_TABLES[arch];
  if (!table) throw new SeccompPolicyError(`unknown architecture "${String(arch)}"`);
  const compiled = compileDenylist(table, DENYLIST);
  return {
    bytes: encodeProgram(compiled.program),
    instructions: compiled.program.length,
    deniedSyscalls: compiled.deniedSyscalls,
    rules: compiled.rules,
  };
}
