/**
 * The seccomp denylist every sandboxed process runs under: which system calls are refused, with
 * which arguments, and why. program.ts turns it into BPF; docs/seccomp.md explains it for users.
 *
 * THREAT. Everything in the sandbox — the agent, the code it writes, whatever it downloads — is
 * untrusted and may be actively hostile. It already runs as an unprivileged uid in fresh user, mount,
 * pid, net, ipc, uts and cgroup namespaces, with every capability dropped, no_new_privs set, Landlock
 * applied, and a network namespace that holds only `lo`. Most calls below would already fail there.
 * The filter exists because "would fail" is not enough:
 *   1. Kernel attack surface. The code behind these calls (user-namespace creation, the eBPF
 *      verifier, io_uring, userfaultfd-assisted races, perf events, keyrings, rarely used socket
 *      families whose modules load on demand) is where most Linux local privilege escalations of the
 *      last decade were found. A kernel bug reached from inside is an escape from every other layer,
 *      so the filter stops the call before any of that code runs.
 *   2. Bypasses of the other layers. A nested user namespace hands out capabilities again; packet,
 *      vsock and non-route netlink sockets reach past the egress proxy; ptrace, process_vm_* and
 *      pidfd_getfd reach into other processes of the sandbox, including the init that holds the
 *      relay's socket; memfd + execveat runs code that is on no path Landlock can see.
 *   3. The user's terminal. `carapace run` passes its stdio through; TIOCSTI / TIOCLINUX push
 *      keystrokes into it, which the user's shell runs after the sandbox has exited, outside it.
 *
 * ASSUMPTIONS.
 *   - carapace-init installs the program after no_new_privs, as the last step before it execs the
 *     agent. Filters are inherited across fork and exec and cannot be removed; a filter the agent adds
 *     can only make answers stricter (the kernel keeps the most severe answer of all filters).
 *   - Default allow. Agents run arbitrary toolchains (compilers, runtimes, browsers); an allowlist
 *     breaks them in ways that are hard to diagnose, and confinement is carried by the namespaces,
 *     capabilities, Landlock and the network namespace. This list removes named surfaces.
 *   - Only the native 64-bit ABI is let through. Another AUDIT_ARCH (i386 through `int $0x80` on
 *     x86_64, a 32-bit task on arm64) and, on x86_64, an x32 syscall number (bit 30 set, same
 *     AUDIT_ARCH, another table) kill the process: their numbers differ from the ones this list
 *     names, so an errno would leave a whole second table to probe for gaps. No program in the
 *     sandbox has a reason to use them; a process that does is treated as an attack, loudly.
 *   - seccomp sees registers, never memory: a pointer argument (a path, clone3's `struct clone_args`,
 *     a sockaddr) cannot be checked, and reading it would race with the caller anyway. Hence clone3
 *     answers ENOSYS, so that C libraries fall back to clone(2), whose flags are a register.
 *   - 32-bit halves. BPF loads 32-bit words; every argument compared here is an `int` or `unsigned
 *     int` in the kernel's prototype (socket family and protocol, ioctl request, execveat flags,
 *     personality, prctl option, seccomp operation), or one whose upper half the kernel discards
 *     (clone's flags go through lower_32_bits()) or refuses (unshare: unknown bits are EINVAL;
 *     prctl(PR_SET_SECCOMP)'s mode: any other value is EINVAL). So the low word is exactly what the
 *     kernel acts on, and comparing the low word alone is required, not merely enough: comparing all
 *     64 bits would let a caller set an upper bit the kernel ignores and slip past an equality test.
 *   - Errno, not kill, for denied calls: EPERM is what the kernel answers a caller without privilege,
 *     and every program already handles it (libuv falls back from io_uring, glibc from clone3 on
 *     ENOSYS). A kill would turn a probe into a crash that is harder to diagnose than an error.
 */

export type DenyErrno = 'EPERM' | 'ENOSYS';

/** A test on the low 32 bits of one syscall argument (see "32-bit halves" above). */
export type ArgCondition =
  | { arg: number; anyBits: number }
  | { arg: number; equals: number }
  | { arg: number; notEquals: number }
  | { arg: number; noneOf: readonly number[] };

export interface DenyRule {
  syscall: string;
  /** All must hold for the rule to apply; absent means always. */
  when?: readonly ArgCondition[];
  errno: DenyErrno;
  why: string;
}

/** Namespace flags of clone(2). CLONE_NEWTIME (0x80) is not among them: clone's low byte is the exit signal. */
const CLONE_NEW_NAMESPACES =
  0x00020000 | // CLONE_NEWNS
  0x02000000 | // CLONE_NEWCGROUP
  0x04000000 | // CLONE_NEWUTS
  0x08000000 | // CLONE_NEWIPC
  0x10000000 | // CLONE_NEWUSER
  0x20000000 | // CLONE_NEWPID
  0x40000000; // CLONE_NEWNET
const CLONE_NEWTIME = 0x00000080;

const AT_EMPTY_PATH = 0x1000;
const AF_UNIX = 1;
const AF_INET = 2;
const AF_INET6 = 10;
const AF_NETLINK = 16;
const NETLINK_ROUTE = 0;
const TIOCSTI = 0x5412;
const TIOCLINUX = 0x541c;
const TIOCSETD = 0x5423;
const SECCOMP_SET_MODE_FILTER = 1;
const PR_SET_SECCOMP = 22;
const SECCOMP_MODE_FILTER = 2;
/** PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32, and 0xffffffff (query, changes nothing). */
const SAFE_PERSONALITIES = [0x0, 0x8, 0x20000, 0x20008, 0xffffffff] as const;

function always(errno: DenyErrno, why: string, syscalls: readonly string[]): DenyRule[] {
  return syscalls.map((syscall) => ({ syscall, errno, why }));
}

export const DENYLIST: readonly DenyRule[] = [
  ...always('EPERM', 'reads or writes the memory and registers of another process', [
    'ptrace',
    'process_vm_readv',
    'process_vm_writev',
  ]),
  ...always('EPERM', 'takes a handle on another process: fd theft (pidfd_getfd) and signalling', [
    'pidfd_open',
    'pidfd_getfd',
    'pidfd_send_signal',
  ]),
  ...always('EPERM', 'large kernel attack surface, repeatedly the entry point of local exploits', [
    'bpf',
    'perf_event_open',
    'userfaultfd',
    'io_uring_setup',
    'io_uring_enter',
    'io_uring_register',
  ]),
  ...always('EPERM', 'kernel keyrings: shared kernel state and a history of exploitable bugs', [
    'keyctl',
    'add_key',
    'request_key',
  ]),
  ...always('EPERM', 'changes the filesystem view that Landlock and the bind mounts define', [
    'mount',
    'umount2',
    'fsopen',
    'fsconfig',
    'fsmount',
    'fspick',
    'move_mount',
    'open_tree',
    'open_tree_attr',
    'mount_setattr',
    'pivot_root',
    'chroot',
  ]),
  ...always('EPERM', 'opens files by handle, bypassing path-based checks', [
    'open_by_handle_at',
    'name_to_handle_at',
  ]),
  ...always('EPERM', 'enters another namespace', ['setns']),
  {
    syscall: 'unshare',
    when: [{ arg: 0, anyBits: CLONE_NEW_NAMESPACES | CLONE_NEWTIME }],
    errno: 'EPERM',
    why: 'a new namespace (a user namespace gives capabilities back)',
  },
  {
    syscall: 'clone',
    when: [{ arg: 0, anyBits: CLONE_NEW_NAMESPACES }],
    errno: 'EPERM',
    why: 'a child in a new namespace (a user namespace gives capabilities back)',
  },
  {
    syscall: 'clone3',
    errno: 'ENOSYS',
    why: 'its flags are in memory and cannot be checked; ENOSYS makes libc fall back to clone',
  },
  ...always('EPERM', 'creates anonymous executable files: code that is on no path Landlock sees', [
    'memfd_create',
  ]),
  {
    syscall: 'execveat',
    when: [{ arg: 4, anyBits: AT_EMPTY_PATH }],
    errno: 'EPERM',
    why: 'executes an open file descriptor (fileless execution)',
  },
  ...always('EPERM', 'loads or replaces kernel code', [
    'kexec_load',
    'kexec_file_load',
    'init_module',
    'finit_module',
    'delete_module',
    'uselib',
  ]),
  ...always('EPERM', 'host-wide state: swap, power, accounting, quotas, kernel log, clocks', [
    'swapon',
    'swapoff',
    'reboot',
    'acct',
    'quotactl',
    'quotactl_fd',
    'lookup_dcookie',
    'syslog',
    'nfsservctl',
    '_sysctl',
    'settimeofday',
    'clock_settime',
    'adjtimex',
    'clock_adjtime',
  ]),
  ...always('EPERM', 'x86 port I/O', ['iopl', 'ioperm']),
  // Docker's default profile refuses these to a container without the capability each needs
  // (docs/seccomp.md, "Compared with Docker and OpenShell"); agents run there, so none is needed.
  ...always('EPERM', 'compares or advises on the kernel objects and memory of another process', [
    'kcmp',
    'process_madvise',
  ]),
  ...always('EPERM', "NUMA memory placement: the host's topology, and another process's pages", [
    'get_mempolicy',
    'set_mempolicy',
    'set_mempolicy_home_node',
    'mbind',
    'migrate_pages',
    'move_pages',
  ]),
  ...always('EPERM', 'filesystem-wide event monitoring: a large kernel surface that no agent needs', [
    'fanotify_init',
  ]),
  ...always('EPERM', 'the LSM attribute interface (Linux 6.8): nothing in a sandbox reads or sets it', [
    'lsm_get_self_attr',
    'lsm_set_self_attr',
    'lsm_list_modules',
  ]),
  ...always('EPERM', "the sandbox's UTS names and terminal hang-up (privileged anyway)", [
    'sethostname',
    'setdomainname',
    'vhangup',
  ]),
  ...always('EPERM', 'obsolete calls that no current program makes', ['sysfs', 'ustat']),
  {
    syscall: 'personality',
    when: [{ arg: 0, noneOf: SAFE_PERSONALITIES }],
    errno: 'EPERM',
    why: 'execution domains that weaken exploit mitigations (ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC, MMAP_PAGE_ZERO)',
  },
  {
    syscall: 'prlimit64',
    when: [{ arg: 0, notEquals: 0 }],
    errno: 'EPERM',
    why: "changes another process's limits: the agent shares its uid with PID 1, whose relay it could starve (setrlimit and prlimit on oneself pass pid 0)",
  },
  {
    syscall: 'seccomp',
    when: [{ arg: 0, equals: SECCOMP_SET_MODE_FILTER }],
    errno: 'EPERM',
    why: 'installs further filters: the sandbox runs exactly the filter that was reported',
  },
  {
    syscall: 'prctl',
    when: [
      { arg: 0, equals: PR_SET_SECCOMP },
      { arg: 1, equals: SECCOMP_MODE_FILTER },
    ],
    errno: 'EPERM',
    why: 'the prctl path to the same operation',
  },
  {
    syscall: 'socket',
    when: [{ arg: 0, noneOf: [AF_UNIX, AF_INET, AF_INET6, AF_NETLINK] }],
    errno: 'EPERM',
    why: 'families other than unix, inet, inet6 and netlink: packet, vsock, bluetooth, alg, rds, tipc, ...',
  },
  {
    syscall: 'socket',
    when: [
      { arg: 0, equals: AF_NETLINK },
      { arg: 2, notEquals: NETLINK_ROUTE },
    ],
    errno: 'EPERM',
    why: 'netlink other than NETLINK_ROUTE (audit, uevents, netfilter, generic families, ...)',
  },
  {
    syscall: 'socketpair',
    when: [{ arg: 0, noneOf: [AF_UNIX, AF_INET, AF_INET6, AF_NETLINK] }],
    errno: 'EPERM',
    why: 'the same family allowlist as socket(2)',
  },
  {
    syscall: 'ioctl',
    when: [{ arg: 1, equals: TIOCSTI }],
    errno: 'EPERM',
    why: 'injects input into a terminal',
  },
  {
    syscall: 'ioctl',
    when: [{ arg: 1, equals: TIOCLINUX }],
    errno: 'EPERM',
    why: 'virtual console control, including pasting the selection as input',
  },
  {
    syscall: 'ioctl',
    when: [{ arg: 1, equals: TIOCSETD }],
    errno: 'EPERM',
    why: 'changes the line discipline of a terminal, possibly the user’s own',
  },
];
