/**
 * The syscalls the execution tests try inside a sandbox, on x86_64. Arguments are chosen so that,
 * without the filter, the kernel gives an answer other than the filter's (EFAULT for a NULL pointer,
 * EBADF for fd -1, EINVAL for an impossible flag, or success): a filtered EPERM then proves the
 * filter answered, not a missing capability. `gated` marks calls whose capability check comes before
 * any argument check, so the kernel says EPERM either way; for those the run shows the answer and
 * the emulator tests show it comes from the filter.
 */
import { SYSCALL_TABLES } from '../../../src/sandbox/seccomp/syscall-tables.js';
import type { Probe } from './sandbox.js';

const NR = SYSCALL_TABLES.x86_64.numbers;
const nr = (name: string): number => {
  const n = NR[name];
  if (n === undefined) throw new Error(`no x86_64 number for ${name}`);
  return n;
};

export interface DeniedProbe extends Probe {
  /** The syscall (table name) this probe covers. */
  syscall: string;
  expect: 'EPERM' | 'ENOSYS' | 'SIGSYS';
  gated?: boolean;
}

const NULL = 0;
const BAD_FD = 0xffffffff; // -1 as an int
const AT_FDCWD = 0xffffff9c; // -100 as an int
const STDOUT = 1; // a pipe in these sandboxes: not a terminal
const HIGH = 1n << 32n; // a bit in the upper half of a 64-bit register
const SIGCHLD = 17;

const CLONE = {
  NEWNS: 0x20000,
  NEWCGROUP: 0x2000000,
  NEWUTS: 0x4000000,
  NEWIPC: 0x8000000,
  NEWUSER: 0x10000000,
  NEWPID: 0x20000000,
  NEWNET: 0x40000000,
  NEWTIME: 0x80,
  THREAD: 0x10000,
  FILES: 0x400,
};
const AF = { UNIX: 1, INET: 2, INET6: 10, NETLINK: 16, PACKET: 17, BLUETOOTH: 31, ALG: 38, VSOCK: 40 };
const SOCK = { STREAM: 1, RAW: 3, SEQPACKET: 5, BAD_TYPE: 99 };
const NETLINK = { ROUTE: 0, AUDIT: 9, KOBJECT_UEVENT: 15, GENERIC: 16 };
const IOCTL = { TIOCSTI: 0x5412, TIOCLINUX: 0x541c, TIOCSETD: 0x5423, FIONREAD: 0x541b };

function d(syscall: string, args: Probe['args'], extra: Partial<DeniedProbe> = {}): DeniedProbe {
  return { name: syscall, syscall, nr: nr(syscall), args, expect: 'EPERM', ...extra };
}

export const DENIED_PROBES: DeniedProbe[] = [
  d('ptrace', [2 /* PTRACE_PEEKDATA */, 999999, NULL, NULL]),
  d('prlimit64', [999999, 7 /* RLIMIT_NOFILE */, NULL, NULL]),
  d('process_vm_readv', [999999, NULL, 1, NULL, 1, 0]),
  d('process_vm_writev', [999999, NULL, 1, NULL, 1, 0]),
  d('pidfd_open', [999999, 0]),
  d('pidfd_getfd', [BAD_FD, 0, 0]),
  d('pidfd_send_signal', [BAD_FD, 0, NULL, 0]),
  d('bpf', [0xffff, NULL, 0]),
  d('perf_event_open', [NULL, 0, BAD_FD, BAD_FD, 0]),
  d('userfaultfd', [1 /* UFFD_USER_MODE_ONLY */ | 0x80000 /* O_CLOEXEC */]),
  d('io_uring_setup', [1, NULL]),
  d('io_uring_enter', [BAD_FD, 0, 0, 0, NULL, 0]),
  d('io_uring_register', [BAD_FD, 0, NULL, 0]),
  d('keyctl', [0xffff, 0, 0, 0, 0]),
  d('add_key', [NULL, NULL, NULL, 0, 0]),
  d('request_key', [NULL, NULL, NULL, 0]),
  d('mount', [NULL, NULL, NULL, 0, NULL]),
  d('umount2', [{ str: '/tmp' }, 0xffff0000]),
  d('fsopen', [{ str: 'tmpfs' }, 0xffff], { gated: true }),
  d('fsconfig', [BAD_FD, 0xffff, NULL, NULL, 0]),
  d('fsmount', [BAD_FD, 0xffff, 0], { gated: true }),
  d('fspick', [BAD_FD, { str: '' }, 0xffff], { gated: true }),
  d('move_mount', [BAD_FD, { str: '' }, BAD_FD, { str: '' }, 0xffffffff], { gated: true }),
  d('open_tree', [BAD_FD, { str: '' }, 0xffffffff]),
  d('open_tree_attr', [BAD_FD, { str: '' }, 0xffffffff, NULL, 0]),
  d('mount_setattr', [BAD_FD, { str: '' }, 0xffffffff, NULL, 0]),
  d('pivot_root', [NULL, NULL], { gated: true }),
  d('chroot', [{ str: '/nonexistent' }]),
  d('open_by_handle_at', [BAD_FD, NULL, 0]),
  d('name_to_handle_at', [AT_FDCWD, { str: '/' }, NULL, { buf: 4 }, 0]),
  d('setns', [BAD_FD, 0]),
  d('unshare', [CLONE.NEWUSER], { name: 'unshare(CLONE_NEWUSER)' }),
  d('unshare', [CLONE.NEWNET], { name: 'unshare(CLONE_NEWNET)', gated: true }),
  d('unshare', [CLONE.NEWNET | 0x1], { name: 'unshare(CLONE_NEWNET|bad bit)' }),
  d('unshare', [CLONE.NEWTIME | 0x1], { name: 'unshare(CLONE_NEWTIME|bad bit)' }),
  d('unshare', [CLONE.NEWNS | 0x1], { name: 'unshare(CLONE_NEWNS|bad bit)' }),
  d('clone', [CLONE.NEWUSER | SIGCHLD, NULL, NULL, NULL, NULL], {
    name: 'clone(CLONE_NEWUSER)',
    kind: 'fork',
  }),
  d('clone', [CLONE.NEWNET | SIGCHLD, NULL, NULL, NULL, NULL], {
    name: 'clone(CLONE_NEWNET)',
    kind: 'fork',
    gated: true,
  }),
  d('clone', [CLONE.NEWPID | CLONE.THREAD, NULL, NULL, NULL, NULL], {
    name: 'clone(CLONE_NEWPID|CLONE_THREAD)',
    kind: 'fork',
  }),
  d('clone3', [NULL, 0], { expect: 'ENOSYS' }),
  d('memfd_create', [{ str: 'x' }, 0]),
  d('execveat', [{ fd: '/usr/bin/true' }, { str: '' }, { argv: ['true'] }, { argv: [] }, 0x1000]),
  d('kexec_load', [0, 0, NULL, 0]),
  d('kexec_file_load', [BAD_FD, BAD_FD, 0, NULL, 0]),
  d('init_module', [NULL, 0, { str: '' }]),
  d('finit_module', [BAD_FD, { str: '' }, 0]),
  d('delete_module', [{ str: 'nonexistent' }, 0]),
  d('uselib', [{ str: '/nonexistent' }]),
  d('swapon', [{ str: '/nonexistent' }, 0xffffffff]),
  d('swapoff', [{ str: '/nonexistent' }], { gated: true }),
  d('reboot', [0, 0, 0, NULL], { gated: true }),
  d('acct', [{ str: '/nonexistent' }], { gated: true }),
  d('quotactl', [0xffffffff, NULL, 0, NULL]),
  d('quotactl_fd', [BAD_FD, 0, 0, NULL]),
  d('lookup_dcookie', [0, NULL, 0]),
  d('syslog', [10 /* SYSLOG_ACTION_SIZE_BUFFER */, NULL, 0], { gated: true }),
  d('nfsservctl', [0, NULL, NULL]),
  d('_sysctl', [NULL]),
  d('settimeofday', [1 /* unreadable */, NULL]),
  d('clock_settime', [0, NULL]),
  d('adjtimex', [NULL]),
  d('clock_adjtime', [0, NULL]),
  d('iopl', [4]),
  d('ioperm', [0x10000, 1, 1]),
  d('kcmp', [999999, 999999, 0, 0, 0]),
  d('process_madvise', [BAD_FD, NULL, 1, 0, 0]),
  d('get_mempolicy', [NULL, NULL, 0, NULL, 0xffff]),
  d('set_mempolicy', [0xffff, NULL, 0]),
  d('set_mempolicy_home_node', [0, 0, 0, 0xffff]),
  d('mbind', [NULL, 0, 0xffff, NULL, 0, 0]),
  d('migrate_pages', [999999, 0, NULL, NULL]),
  d('move_pages', [999999, 0, NULL, NULL, NULL, 0]),
  d('fanotify_init', [0, 0xffffffff], { gated: true }),
  d('lsm_get_self_attr', [0, NULL, NULL, 0xffff]),
  d('lsm_set_self_attr', [0, NULL, 0, 0xffff]),
  d('lsm_list_modules', [NULL, NULL, 0xffff]),
  d('sethostname', [NULL, 0xffffffff], { gated: true }),
  d('setdomainname', [NULL, 0xffffffff], { gated: true }),
  d('vhangup', [], { gated: true }),
  d('sysfs', [0xffff]),
  d('ustat', [0, NULL]),
  d('personality', [0x40000 /* ADDR_NO_RANDOMIZE */], { name: 'personality(ADDR_NO_RANDOMIZE)' }),
  d('seccomp', [1 /* SECCOMP_SET_MODE_FILTER */, 0, NULL], { name: 'seccomp(SET_MODE_FILTER)' }),
  d('prctl', [22 /* PR_SET_SECCOMP */, 2 /* SECCOMP_MODE_FILTER */, NULL], { name: 'prctl(PR_SET_SECCOMP)' }),
  d('socket', [AF.PACKET, SOCK.RAW, 0], { name: 'socket(AF_PACKET)', gated: true }),
  d('socket', [AF.PACKET, SOCK.BAD_TYPE, 0], { name: 'socket(AF_PACKET, bad type)' }),
  d('socket', [HIGH | BigInt(AF.PACKET), SOCK.BAD_TYPE, 0], { name: 'socket(AF_PACKET + high bits)' }),
  d('socket', [AF.VSOCK, SOCK.STREAM, 0], { name: 'socket(AF_VSOCK)' }),
  d('socket', [AF.BLUETOOTH, SOCK.STREAM, 0], { name: 'socket(AF_BLUETOOTH)' }),
  d('socket', [AF.ALG, SOCK.SEQPACKET, 0], { name: 'socket(AF_ALG)' }),
  d('socket', [AF.NETLINK, SOCK.RAW, NETLINK.AUDIT], { name: 'socket(AF_NETLINK, NETLINK_AUDIT)' }),
  d('socket', [AF.NETLINK, SOCK.RAW, NETLINK.KOBJECT_UEVENT], { name: 'socket(AF_NETLINK, KOBJECT_UEVENT)' }),
  d('socket', [AF.NETLINK, SOCK.RAW, NETLINK.GENERIC], { name: 'socket(AF_NETLINK, NETLINK_GENERIC)' }),
  d('socketpair', [AF.ALG, SOCK.SEQPACKET, 0, { buf: 8 }], { name: 'socketpair(AF_ALG)' }),
  d('ioctl', [STDOUT, IOCTL.TIOCSTI, { buf: 1 }], { name: 'ioctl(TIOCSTI)' }),
  d('ioctl', [STDOUT, HIGH | BigInt(IOCTL.TIOCSTI), { buf: 1 }], { name: 'ioctl(TIOCSTI + high bits)' }),
  d('ioctl', [STDOUT, IOCTL.TIOCLINUX, { buf: 1 }], { name: 'ioctl(TIOCLINUX)' }),
  d('ioctl', [STDOUT, IOCTL.TIOCSETD, { buf: 4 }], { name: 'ioctl(TIOCSETD)' }),
  {
    name: 'x32 getpid',
    syscall: '(x32)',
    nr: 0x40000000 | 39,
    args: [],
    expect: 'SIGSYS',
  },
];

/** Calls the filter must let through, with what they return when they work. */
export interface AllowedProbe extends Probe {
  ok: 'nonnegative' | 'exec' | 'ENOSYS';
}

function a(
  name: string,
  syscall: string,
  args: Probe['args'],
  extra: Partial<AllowedProbe> = {},
): AllowedProbe {
  return { name, nr: nr(syscall), args, ok: 'nonnegative', ...extra };
}

export const ALLOWED_PROBES: AllowedProbe[] = [
  { name: 'getpid', nr: 39, args: [], ok: 'nonnegative' },
  { name: 'negative syscall number', nr: -1, args: [], ok: 'ENOSYS' },
  a('clone(SIGCHLD): fork', 'clone', [SIGCHLD, NULL, NULL, NULL, NULL], { kind: 'fork' }),
  a('unshare(CLONE_FILES)', 'unshare', [CLONE.FILES]),
  a('socket(AF_INET)', 'socket', [AF.INET, SOCK.STREAM, 0]),
  a('socket(AF_INET6)', 'socket', [AF.INET6, SOCK.STREAM, 0]),
  a('socket(AF_UNIX)', 'socket', [AF.UNIX, SOCK.STREAM, 0]),
  a('socket(AF_NETLINK, NETLINK_ROUTE)', 'socket', [AF.NETLINK, SOCK.RAW, NETLINK.ROUTE]),
  a('socket(AF_NETLINK, ROUTE + high bits)', 'socket', [AF.NETLINK, SOCK.RAW, HIGH]),
  a('socketpair(AF_UNIX)', 'socketpair', [AF.UNIX, SOCK.STREAM, 0, { buf: 8 }]),
  a(
    'execveat(path, no AT_EMPTY_PATH)',
    'execveat',
    [AT_FDCWD, { str: '/usr/bin/true' }, { argv: ['true'] }, { argv: [] }, 0],
    {
      ok: 'exec',
    },
  ),
  a('prlimit64(0: itself)', 'prlimit64', [0, 7 /* RLIMIT_NOFILE */, NULL, { buf: 16 }]),
  a('personality(query)', 'personality', [0xffffffff]),
  a('personality(PER_LINUX)', 'personality', [0]),
  a('seccomp(GET_ACTION_AVAIL)', 'seccomp', [2, 0, { buf: 4 }]),
  a('prctl(PR_GET_SECCOMP)', 'prctl', [21]),
  a('ioctl(FIONREAD)', 'ioctl', [STDOUT, IOCTL.FIONREAD, { buf: 4 }]),
];
