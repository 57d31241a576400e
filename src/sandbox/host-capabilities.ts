/**
 * What this host can enforce. `carapace doctor` prints it; the sandbox consults it before a start.
 *
 * Every probe runs the real thing where it can (bwrap is executed, a user namespace is created as an
 * unprivileged uid) rather than trusting a sysctl, because distributions gate these features in
 * several places (sysctls, AppArmor, setuid bits) and only a real attempt shows the sum of them.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, statfsSync } from 'node:fs';
import { cgroupParent } from './cgroup/cgroup.js';
import { LIMIT_CONTROLLERS, readCgroupLayout, type CgroupLayout } from './cgroup/cgroup-layout.js';
import { nativeBinary } from './native-paths.js';
import { MERGED_USR_ROOT } from './launch/bwrap-minimal.js';

export type CapabilityStatus = 'ok' | 'degraded' | 'missing';

export interface Capability {
  /** Short stable identifier, e.g. `bwrap`, `landlock`. */
  id: string;
  title: string;
  status: CapabilityStatus;
  /** What was found, e.g. `bubblewrap 0.8.0` or `ABI 7`. */
  detail: string;
  /** When not ok: what breaks and how to fix it. */
  impact?: string;
  fix?: string;
}

export interface HostCapabilities {
  capabilities: Capability[];
  landlockAbi: number;
  bwrapVersion: string | null;
  cgroup: CgroupLayout;
}

function probeBwrap(): { version: string | null; error?: string } {
  const r = spawnSync('bwrap', ['--version'], { encoding: 'utf8' });
  if (r.error) return { version: null, error: r.error.message };
  if (r.status !== 0) return { version: null, error: r.stderr.trim() };
  return { version: r.stdout.trim() };
}

/** Creates a real user+net+pid namespace with bwrap, as an unprivileged uid when we are root. */
function probeUserNamespaces(): { ok: boolean; detail: string } {
  const args = [
    '--unshare-all',
    '--unshare-user',
    '--disable-userns',
    ...MERGED_USR_ROOT,
    '--proc',
    '/proc',
    '--dev',
    '/dev',
    '--cap-drop',
    'ALL',
    '--',
    '/usr/bin/true',
  ];
  const asNobody = process.getuid?.() === 0 ? { uid: 65534, gid: 65534 } : {};
  const r = spawnSync('bwrap', args, { encoding: 'utf8', ...asNobody, timeout: 10_000 });
  if (r.error) return { ok: false, detail: r.error.message };
  if (r.status !== 0) return { ok: false, detail: r.stderr.trim() || `exit ${r.status}` };
  return { ok: true, detail: 'an unprivileged uid created user, pid, net, ipc, uts and cgroup namespaces' };
}

interface NativeProbe {
  landlock_abi: number;
  seccomp_filter: boolean;
}

function probeNative(): NativeProbe | { error: string } {
  const init = nativeBinary();
  if (!existsSync(init)) return { error: `${init} is not built (run: npm run build)` };
  const r = spawnSync(init, ['--probe'], { encoding: 'utf8', timeout: 5_000 });
  if (r.status !== 0) return { error: (r.stderr || r.error?.message || `exit ${r.status}`).trim() };
  try {
    return JSON.parse(r.stdout) as NativeProbe;
  } catch {
    return { error: `unexpected output from ${init} --probe: ${r.stdout.slice(0, 80)}` };
  }
}

export function probeHost(stateDir: string): HostCapabilities {
  const caps: Capability[] = [];

  const bwrap = probeBwrap();
  caps.push(
    bwrap.version
      ? { id: 'bwrap', title: 'bubblewrap', status: 'ok', detail: bwrap.version }
      : {
          id: 'bwrap',
          title: 'bubblewrap',
          status: 'missing',
          detail: bwrap.error ?? 'not found',
          impact: 'no sandbox can start',
          fix: 'apt-get install bubblewrap (or re-run ./install.sh)',
        },
  );

  if (bwrap.version) {
    const userns = probeUserNamespaces();
    caps.push(
      userns.ok
        ? { id: 'userns', title: 'unprivileged user namespaces', status: 'ok', detail: userns.detail }
        : {
            id: 'userns',
            title: 'unprivileged user namespaces',
            status: 'missing',
            detail: userns.detail,
            impact: 'bwrap cannot create the sandbox namespaces; no sandbox can start',
            fix:
              'sysctl -w kernel.unprivileged_userns_clone=1 (Debian) or ' +
              'kernel.apparmor_restrict_unprivileged_userns=0 (Ubuntu), and user.max_user_namespaces > 0',
          },
    );
  }

  const native = probeNative();
  let landlockAbi = 0;
  if ('error' in native) {
    caps.push({
      id: 'landlock',
      title: 'Landlock',
      status: 'missing',
      detail: native.error,
      impact: 'cannot tell what the kernel enforces; sandboxes will not start',
      fix: 'run ./install.sh (it builds native/carapace-init)',
    });
  } else {
    landlockAbi = native.landlock_abi;
    caps.push(landlockCapability(landlockAbi));
    caps.push(
      native.seccomp_filter
        ? { id: 'seccomp', title: 'seccomp filters', status: 'ok', detail: 'SECCOMP_MODE_FILTER available' }
        : {
            id: 'seccomp',
            title: 'seccomp filters',
            status: 'missing',
            detail: 'SECCOMP_MODE_FILTER unavailable',
            impact:
              'dangerous syscalls (ptrace, bpf, mount, io_uring…) cannot be blocked; sandboxes refuse to start',
            fix: 'use a kernel built with CONFIG_SECCOMP_FILTER=y',
          },
    );
  }

  const cgroup = readCgroupLayout();
  caps.push(cgroupCapability(cgroup));
  caps.push(cgroupMigrationCapability(cgroup));
  caps.push(tcpHashCapability());
  caps.push(processTreeCapability());
  caps.push(diskCapability(stateDir));

  return { capabilities: caps, landlockAbi, bwrapVersion: bwrap.version, cgroup };
}

function landlockCapability(abi: number): Capability {
  const base = { id: 'landlock', title: 'Landlock' };
  if (abi <= 0) {
    return {
      ...base,
      status: 'missing',
      detail: 'not enabled in this kernel',
      impact: 'the filesystem allowlist rests on mounts alone; hard_requirement policies refuse to start',
      fix: 'boot with lsm=landlock,… (kernel ≥ 5.13 with CONFIG_SECURITY_LANDLOCK=y)',
    };
  }
  if (abi < 6) {
    const missing = [
      abi < 3 && 'truncate',
      abi < 4 && 'TCP port rules',
      abi < 5 && 'ioctl',
      'signal and abstract socket scoping',
    ];
    return {
      ...base,
      status: 'degraded',
      detail: `ABI ${abi}`,
      impact: `missing: ${missing.filter(Boolean).join(', ')}; best_effort policies run with less, hard_requirement policies refuse`,
      fix: 'use a kernel ≥ 6.12 for Landlock ABI 6',
    };
  }
  return { ...base, status: 'ok', detail: `ABI ${abi}` };
}

function cgroupCapability(layout: CgroupLayout): Capability {
  const v2 = LIMIT_CONTROLLERS.filter((c) => layout.v2Controllers.includes(c));
  const v1 = LIMIT_CONTROLLERS.filter((c) => layout.v1Mounts[c] !== undefined);
  const usable = new Set([...v2, ...v1]);
  const parts: string[] = [];
  if (layout.v2Mount)
    parts.push(`v2 at ${layout.v2Mount} [${layout.v2Controllers.join(' ') || 'no controllers'}]`);
  if (Object.keys(layout.v1Mounts).length) parts.push(`v1 [${Object.keys(layout.v1Mounts).join(' ')}]`);
  const detail = parts.join('; ') || 'no cgroup hierarchy mounted';
  const missing = LIMIT_CONTROLLERS.filter((c) => !usable.has(c));
  // A normal user needs a cgroup subtree of their own, whatever the host mounts (cgroup.ts).
  const uid = process.getuid?.() ?? 0;
  const unreachable = LIMIT_CONTROLLERS.filter((c) => usable.has(c) && cgroupParent(c, layout, uid) === null);
  if (unreachable.length > 0) {
    const v1Dirs = unreachable
      .filter((c) => !layout.v2Controllers.includes(c))
      .map((c) => `${layout.v1Mounts[c]}/carapace/user-${uid}`);
    const fixes = [
      v1Dirs.length > 0 && `as root: mkdir -p ${v1Dirs.join(' ')} && chown ${uid} ${v1Dirs.join(' ')}`,
      unreachable.some((c) => layout.v2Controllers.includes(c)) &&
        'run carapace under a systemd unit with Delegate=yes (e.g. systemd-run --user -p Delegate=yes --shell)',
    ];
    return {
      id: 'cgroup',
      title: 'cgroups',
      status: 'degraded',
      detail: `${detail}; uid ${uid} cannot make cgroups for ${unreachable.join(', ')}`,
      impact:
        `limits on ${unreachable.join(', ')} cannot be enforced for this user` +
        (unreachable.includes('pids')
          ? " (the default policy's pids limit falls back to RLIMIT_NPROC)"
          : '') +
        '; a policy with such limits needs --best-effort-limits',
      fix: fixes.filter(Boolean).join('; or '),
    };
  }
  if (missing.length === 0) return { id: 'cgroup', title: 'cgroups', status: 'ok', detail };
  return {
    id: 'cgroup',
    title: 'cgroups',
    status: 'degraded',
    detail,
    impact: `policy limits on ${missing.join(', ')} cannot be applied (the start fails unless --best-effort-limits)`,
    fix: 'mount cgroup2 with those controllers enabled, or the matching cgroup v1 controllers',
  };
}

/**
 * Moving a sandbox's init into its cgroups takes a kernel lock that, unless some hierarchy is
 * mounted with `favordynmods`, waits for an RCU grace period: measured here at 4–20 ms, three times
 * the rest of a sandbox start. The option makes fork and exit take that lock slightly more slowly
 * instead; `./install.sh` sets it when it runs as root.
 */
function cgroupMigrationCapability(layout: CgroupLayout): Capability {
  const base = { id: 'cgroup-migration', title: 'cgroup task moves' };
  if (layout.favorDynmods) return { ...base, status: 'ok', detail: 'fast (favordynmods)' };
  const target = layout.v2Mount ?? '/sys/fs/cgroup/unified';
  return {
    ...base,
    status: 'degraded',
    detail: 'slow: no cgroup hierarchy is mounted with favordynmods',
    impact: 'each sandbox start with limits waits 5–20 ms for the kernel to move its init into a cgroup',
    fix: layout.v2Mount
      ? `mount -o remount,favordynmods ${target} (./install.sh does this as root; lasts until reboot)`
      : `mkdir -p ${target} && mount -t cgroup2 -o favordynmods none ${target}`,
  };
}

export const TCP_CHILD_EHASH = '/proc/sys/net/ipv4/tcp_child_ehash_entries';

/**
 * The proxy finds which process opened a connection by reading the sandbox's TCP table
 * (`/proc/<pid>/net/tcp`). Unless `net.ipv4.tcp_child_ehash_entries` gives each new network
 * namespace its own hash table, that read walks the host's whole table: 1.15 ms per connection
 * measured here, against 28 µs with a table of its own. `./install.sh` sets it (as root).
 */
function tcpHashCapability(): Capability {
  const base = { id: 'tcp-hash', title: 'per-sandbox TCP table' };
  let value: number;
  try {
    value = Number(readFileSync(TCP_CHILD_EHASH, 'utf8').trim());
  } catch {
    return {
      ...base,
      status: 'degraded',
      detail: 'this kernel cannot give a network namespace its own TCP hash table',
      impact: "each connection's caller lookup walks every TCP socket of the host (about 1 ms here)",
      fix: 'use a kernel ≥ 6.1 (net.ipv4.tcp_child_ehash_entries)',
    };
  }
  if (value > 0) return { ...base, status: 'ok', detail: `own hash table (${value} buckets)` };
  return {
    ...base,
    status: 'degraded',
    detail: "sandboxes share the host's TCP hash table",
    impact: "each connection's caller lookup walks every TCP socket of the host (about 1 ms here)",
    fix: 'sysctl -w net.ipv4.tcp_child_ehash_entries=1024 (./install.sh does this as root, and keeps it in /etc/sysctl.d)',
  };
}

/**
 * A sandbox's CPU and memory in `carapace term`, the dashboard and /metrics come from a walk of its
 * process tree through /proc/<pid>/task/<tid>/children (src/sandbox/processes.ts), which a kernel
 * built without CONFIG_PROC_CHILDREN does not have.
 */
function processTreeCapability(): Capability {
  const base = { id: 'process-tree', title: "sandboxes' process trees" };
  if (existsSync(`/proc/self/task/${process.pid}/children`))
    return { ...base, status: 'ok', detail: '/proc/<pid>/task/<tid>/children' };
  return {
    ...base,
    status: 'degraded',
    detail: 'no /proc/<pid>/task/<tid>/children',
    impact: "a sandbox's CPU and memory (term, dashboard, /metrics) count its init alone",
    fix: "use a kernel built with CONFIG_PROC_CHILDREN=y (most distributions' kernels are)",
  };
}

function diskCapability(stateDir: string): Capability {
  let dir = stateDir;
  while (!existsSync(dir) && dir !== '/') dir = dir.replace(/\/[^/]*$/, '') || '/';
  const s = statfsSync(dir);
  const freeBytes = s.bavail * s.bsize;
  const freeGiB = freeBytes / 2 ** 30;
  const detail = `${freeGiB.toFixed(1)} GiB free at ${dir}`;
  if (freeGiB >= 2) return { id: 'disk', title: 'free disk', status: 'ok', detail };
  return {
    id: 'disk',
    title: 'free disk',
    status: 'degraded',
    detail,
    impact: 'agent installs and workspaces may fail with ENOSPC',
    fix: `free space under ${dir} or point CARAPACE_HOME at a larger disk`,
  };
}
