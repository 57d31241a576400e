/**
 * Syscall numbers of the calls the filter names, per architecture, from the kernel's tables
 * (arch/x86/entry/syscalls/syscall_64.tbl for x86_64; include/uapi/asm-generic/unistd.h for aarch64).
 * test/seccomp/syscall-tables.test.ts checks them against the UAPI headers installed on the host.
 *
 * Only the calls the denylist names are here: a number that is not in a table cannot be filtered by
 * mistake. A call the architecture does not have is listed in `absent`, so that a rule naming it is
 * skipped on purpose; a name in neither is a typo, and building the filter fails.
 */
import { AUDIT_ARCH } from './bpf.js';

export type SeccompArch = 'x86_64' | 'aarch64';

export interface SyscallTable {
  arch: SeccompArch;
  auditArch: number;
  /** Whether syscall numbers with bit 30 set reach a second ABI (x32) under the same AUDIT_ARCH. */
  hasX32: boolean;
  numbers: Readonly<Record<string, number>>;
  /** Calls this architecture never had (or dropped before it existed). */
  absent: ReadonlySet<string>;
}

const X86_64: Record<string, number> = {
  ioctl: 16,
  socket: 41,
  socketpair: 53,
  clone: 56,
  uselib: 134,
  personality: 135,
  prlimit64: 302,
  chroot: 161,
  pivot_root: 155,
  _sysctl: 156,
  prctl: 157,
  adjtimex: 159,
  acct: 163,
  settimeofday: 164,
  mount: 165,
  umount2: 166,
  swapon: 167,
  swapoff: 168,
  reboot: 169,
  iopl: 172,
  ioperm: 173,
  init_module: 175,
  delete_module: 176,
  quotactl: 179,
  nfsservctl: 180,
  ptrace: 101,
  syslog: 103,
  lookup_dcookie: 212,
  clock_settime: 227,
  kexec_load: 246,
  add_key: 248,
  request_key: 249,
  keyctl: 250,
  unshare: 272,
  perf_event_open: 298,
  name_to_handle_at: 303,
  open_by_handle_at: 304,
  clock_adjtime: 305,
  setns: 308,
  process_vm_readv: 310,
  process_vm_writev: 311,
  finit_module: 313,
  seccomp: 317,
  memfd_create: 319,
  kexec_file_load: 320,
  bpf: 321,
  execveat: 322,
  userfaultfd: 323,
  pidfd_send_signal: 424,
  io_uring_setup: 425,
  io_uring_enter: 426,
  io_uring_register: 427,
  open_tree: 428,
  move_mount: 429,
  fsopen: 430,
  fsconfig: 431,
  fsmount: 432,
  fspick: 433,
  pidfd_open: 434,
  clone3: 435,
  pidfd_getfd: 438,
  mount_setattr: 442,
  quotactl_fd: 443,
  open_tree_attr: 467,
  kcmp: 312,
  process_madvise: 440,
  get_mempolicy: 239,
  set_mempolicy: 238,
  set_mempolicy_home_node: 450,
  mbind: 237,
  migrate_pages: 256,
  move_pages: 279,
  fanotify_init: 300,
  lsm_get_self_attr: 459,
  lsm_set_self_attr: 460,
  lsm_list_modules: 461,
  sethostname: 170,
  setdomainname: 171,
  vhangup: 153,
  sysfs: 139,
  ustat: 136,
};

/** asm-generic numbering, which arm64 uses; it has no legacy calls that were obsolete in 2012. */
const AARCH64: Record<string, number> = {
  lookup_dcookie: 18,
  ioctl: 29,
  umount2: 39,
  mount: 40,
  pivot_root: 41,
  nfsservctl: 42,
  chroot: 51,
  quotactl: 60,
  acct: 89,
  personality: 92,
  prlimit64: 261,
  unshare: 97,
  kexec_load: 104,
  init_module: 105,
  delete_module: 106,
  clock_settime: 112,
  syslog: 116,
  ptrace: 117,
  reboot: 142,
  prctl: 167,
  settimeofday: 170,
  adjtimex: 171,
  socket: 198,
  socketpair: 199,
  add_key: 217,
  request_key: 218,
  keyctl: 219,
  clone: 220,
  swapon: 224,
  swapoff: 225,
  perf_event_open: 241,
  name_to_handle_at: 264,
  open_by_handle_at: 265,
  clock_adjtime: 266,
  setns: 268,
  process_vm_readv: 270,
  process_vm_writev: 271,
  finit_module: 273,
  seccomp: 277,
  memfd_create: 279,
  bpf: 280,
  execveat: 281,
  userfaultfd: 282,
  kexec_file_load: 294,
  pidfd_send_signal: 424,
  io_uring_setup: 425,
  io_uring_enter: 426,
  io_uring_register: 427,
  open_tree: 428,
  move_mount: 429,
  fsopen: 430,
  fsconfig: 431,
  fsmount: 432,
  fspick: 433,
  pidfd_open: 434,
  clone3: 435,
  pidfd_getfd: 438,
  mount_setattr: 442,
  quotactl_fd: 443,
  open_tree_attr: 467,
  kcmp: 272,
  process_madvise: 440,
  get_mempolicy: 236,
  set_mempolicy: 237,
  set_mempolicy_home_node: 450,
  mbind: 235,
  migrate_pages: 238,
  move_pages: 239,
  fanotify_init: 262,
  lsm_get_self_attr: 459,
  lsm_set_self_attr: 460,
  lsm_list_modules: 461,
  sethostname: 161,
  setdomainname: 162,
  vhangup: 58,
};

export const SYSCALL_TABLES: Readonly<Record<SeccompArch, SyscallTable>> = {
  x86_64: {
    arch: 'x86_64',
    auditArch: AUDIT_ARCH.x86_64,
    hasX32: true,
    numbers: X86_64,
    absent: new Set(),
  },
  aarch64: {
    arch: 'aarch64',
    auditArch: AUDIT_ARCH.aarch64,
    hasX32: false,
    numbers: AARCH64,
    // x86 port I/O, the a.out loader, the binary sysctl interface and the obsolete sysfs(2) and
    // ustat(2) were never part of arm64.
    absent: new Set(['iopl', 'ioperm', 'uselib', '_sysctl', 'sysfs', 'ustat']),
  },
};

/** The architecture Node runs on, or null when seccomp filters for it are not generated. */
export function hostArch(): SeccompArch | null {
  if (process.arch === 'x64') return 'x86_64';
  if (process.arch === 'arm64') return 'aarch64';
  return null;
}
