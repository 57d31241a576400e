/**
 * Who is calling: from the source port of a connection the relay accepted inside the sandbox, find
 * the process that owns the socket and the executables of it and its ancestors.
 *
 * Threat: the policy says which BINARY may reach a host, so an agent would like to be taken for an
 * allowed one. Assumptions and rules:
 * - the relay header is trusted for the source address and port, and for the client socket's inode
 *   when it carries one (only the relay holds the socket; it found the inode with sock_diag);
 * - without an inode, `/proc/<net pid>/net/tcp{,6}` is read in the sandbox's network namespace; the
 *   socket is the one whose local end is the client's address and port and whose remote end is the
 *   relay's;
 * - owners are every process (in the scanned scope) holding `socket:[inode]` in its fd table. Several
 *   owners with different executables (a socket passed over SCM_RIGHTS or inherited across fork+exec)
 *   are ambiguous and refused; several owners with the same executable are that executable;
 * - the executable is `readlink /proc/<pid>/exe`: the kernel resolves it relative to the reader's root
 *   and, for a process in another mount namespace, yields the path as that namespace sees it (checked:
 *   a process in a bwrap sandbox running /sandbox/x reads as `/sandbox/x` from the host), so no mapping
 *   is needed. argv/cmdline is never used: any process can set it. A ` (deleted)` suffix (the file was
 *   unlinked or replaced while running) is removed; trust-on-first-use (BinaryTrust) catches content
 *   changes;
 * - ancestors are the executables of the parent chain, nearest first, up to but excluding the
 *   sandbox's init (its executable is ours, not the agent's) — the policy decides whether they count;
 * - scope: by default every process in /proc whose network namespace is the sandbox's; a launcher can
 *   instead pass the sandbox's own procfs (`/proc/<init>/root/proc`), which lists only sandbox
 *   processes and is cheaper — it is used only while it really is a procfs mount (statfs magic), so a
 *   sandbox cannot feed us a forged /proc.
 */
import { closeSync, constants, openSync, readSync, readdirSync, readlinkSync, statfsSync } from 'node:fs';
import { endianness } from 'node:os';
import { BinaryTrust } from './binary-trust.js';
import { parseIp } from '../net/ip.js';

export interface CallerQuery {
  family: 4 | 6;
  srcAddress: string;
  srcPort: number;
  dstAddress: string;
  dstPort: number;
  /** The client socket's inode, when the relay looked it up; else it is found in the TCP table. */
  socketInode?: number | null | undefined;
}

export interface CallerIdentity {
  pid: number;
  binary: string;
  /** Executables of the parent chain, nearest first, excluding the sandbox init. */
  ancestors: string[];
  sha256?: string | undefined;
}

export type CallerFindingKind = 'ambiguous-identity' | 'binary-replaced';

export type CallerResult =
  | { ok: true; caller: CallerIdentity }
  | { ok: false; reason: string; finding?: CallerFindingKind; pid?: number; binary?: string };

/** Finds the process behind a connection. Tests may implement it with a fixed answer. */
export interface CallerResolver {
  resolve(query: CallerQuery): Promise<CallerResult>;
  /** Releases what it holds (a descriptor of the sandbox's procfs); called when its sandbox goes. */
  close?(): void;
}

export interface ProcCallerResolverOptions {
  /** A process in the sandbox's network namespace (the sandbox init's host pid). */
  netPid: number;
  /** Pid at which the ancestor walk stops (excluded). Default: netPid. */
  rootPid?: number | undefined;
  /** The sandbox's own procfs as seen from the host, e.g. `/proc/<init>/root/proc`. */
  sandboxProc?: string | undefined;
  /** Pid of the sandbox init inside `sandboxProc` (default 1). */
  sandboxRootPid?: number | undefined;
  /** Trust-on-first-use hashing of executables. */
  binaryTrust?: BinaryTrust | undefined;
  /** Host procfs (tests only). */
  hostProc?: string | undefined;
}

const PROC_SUPER_MAGIC = 0x9fa0;
/** Not in fs.constants; the same value on every Linux architecture (O_DIRECTORY is not: fs has it). */
const O_PATH = 0o10000000;
const DELETED = ' (deleted)';
const MAX_ANCESTORS = 64;
const LITTLE = endianness() === 'LE';

/** /proc/net/tcp prints each 32-bit word of an address with %08X in host byte order. */
function procHex(bytes: Uint8Array): string {
  let out = '';
  for (let w = 0; w < bytes.length; w += 4) {
    const word = LITTLE
      ? [bytes[w + 3], bytes[w + 2], bytes[w + 1], bytes[w]]
      : [bytes[w], bytes[w + 1], bytes[w + 2], bytes[w + 3]];
    for (const b of word) out += (b as number).toString(16).padStart(2, '0');
  }
  return out.toUpperCase();
}

function endpointKeys(address: string, port: number): { v4: string | null; v6: string | null } {
  const ip = parseIp(address);
  if (!ip) return { v4: null, v6: null };
  const p = port.toString(16).toUpperCase().padStart(4, '0');
  if (ip.family === 4) {
    const mapped = new Uint8Array(16);
    mapped[10] = 0xff;
    mapped[11] = 0xff;
    mapped.set(ip.bytes, 12);
    return { v4: `${procHex(ip.bytes)}:${p}`, v6: `${procHex(mapped)}:${p}` };
  }
  return { v4: null, v6: `${procHex(ip.bytes)}:${p}` };
}

/** The inode in the first non-listening row of `text` that contains `needle` (` local remote `). */
function inodeInRows(text: string, needle: string): number | null {
  for (let at = text.indexOf(needle); at >= 0; at = text.indexOf(needle, at + 1)) {
    const eol = text.indexOf('\n', at);
    const f = text
      .slice(at, eol < 0 ? undefined : eol)
      .trim()
      .split(/\s+/);
    // f: local remote st tx:rx tr:when retrnsmt uid timeout inode …
    if (f[2] === '0A') continue;
    const inode = Number(f[8]);
    if (Number.isSafeInteger(inode) && inode > 0) return inode;
  }
  return null;
}

function needles(query: CallerQuery): { v4: string | null; v6: string | null } {
  const local = endpointKeys(query.srcAddress, query.srcPort);
  const remote = endpointKeys(query.dstAddress, query.dstPort);
  return {
    v4: local.v4 && remote.v4 ? ` ${local.v4} ${remote.v4} ` : null,
    v6: local.v6 && remote.v6 ? ` ${local.v6} ${remote.v6} ` : null,
  };
}

/** The socket inode for the tuple in the text of a tcp and a tcp6 table, or null (tests). */
export function findSocketInode(tcp: string, tcp6: string, query: CallerQuery): number | null {
  const n = needles(query);
  return (n.v4 ? inodeInRows(tcp, n.v4) : null) ?? (n.v6 ? inodeInRows(tcp6, n.v6) : null);
}

/**
 * Search a /proc TCP table while reading it, and stop at the row: the kernel generates the table as
 * it is read, walking every TCP socket of the host (TIME_WAIT included), so stopping early halves
 * the cost on average.
 */
function scanTable(path: string, needle: string): number | null {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch {
    return null;
  }
  try {
    const buf = Buffer.allocUnsafe(64 * 1024);
    let carry = '';
    for (;;) {
      const n = readSync(fd, buf, 0, buf.length, null);
      if (n === 0) return inodeInRows(carry, needle);
      const text = carry + buf.toString('latin1', 0, n);
      const lastEol = text.lastIndexOf('\n');
      const found = inodeInRows(text.slice(0, lastEol + 1), needle);
      if (found !== null) return found;
      carry = text.slice(lastEol + 1);
    }
  } catch {
    return null;
  } finally {
    closeSync(fd);
  }
}

const statBuffer = Buffer.allocUnsafe(4096);

/** /proc/<pid>/stat in one read (it is far shorter than the buffer), or '' when it is gone. */
function readStat(path: string): string {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch {
    return '';
  }
  try {
    return statBuffer.toString('latin1', 0, readSync(fd, statBuffer, 0, statBuffer.length, 0));
  } catch {
    return '';
  } finally {
    closeSync(fd);
  }
}

/** PPid from /proc/<pid>/stat (the comm field may contain spaces and parentheses). */
function parentOf(procDir: string): number | null {
  const stat = readStat(`${procDir}/stat`);
  const close = stat.lastIndexOf(')');
  if (close < 0) return null;
  const fields = stat.slice(close + 2).split(' ');
  const ppid = Number(fields[1]);
  return Number.isInteger(ppid) ? ppid : null;
}

function exeOf(procDir: string): string | null {
  try {
    const target = readlinkSync(`${procDir}/exe`);
    return target.endsWith(DELETED) ? target.slice(0, -DELETED.length) : target;
  } catch {
    return null;
  }
}

export class ProcCallerResolver implements CallerResolver {
  private readonly hostProc: string;
  private readonly rootPid: number;
  /** The sandbox's procfs, held open once it was found to be one (see scope()). */
  private sandboxProcFd: number | null = null;
  private inflight = 0;
  private closing = false;

  constructor(private readonly options: ProcCallerResolverOptions) {
    this.hostProc = options.hostProc ?? '/proc';
    this.rootPid = options.rootPid ?? options.netPid;
  }

  async resolve(query: CallerQuery): Promise<CallerResult> {
    // A lookup may still read through /proc/self/fd/N after an await (the executable's hash): the
    // descriptor is closed only once none is in flight, so N cannot meanwhile name another file.
    this.inflight++;
    try {
      return await this.lookup(query);
    } finally {
      if (--this.inflight === 0 && this.closing) this.close();
    }
  }

  private async lookup(query: CallerQuery): Promise<CallerResult> {
    const inode = query.socketInode ?? this.inodeFromTable(query);
    if (inode === null)
      return { ok: false, reason: `no socket for source port ${query.srcPort} in the sandbox` };

    const { proc, rootPid, candidates } = this.scope();
    const link = `socket:[${inode}]`;
    const owners: number[] = [];
    for (const pid of candidates) {
      // The init holds the relay's ends of every connection, never a client's: skipping its fds
      // (two sockets and four pipes per open connection) is most of the scan saved.
      if (pid === rootPid) continue;
      let fds: string[];
      try {
        fds = readdirSync(`${proc}/${pid}/fd`);
      } catch {
        continue;
      }
      for (const fd of fds) {
        let target: string;
        try {
          target = readlinkSync(`${proc}/${pid}/fd/${fd}`);
        } catch {
          continue;
        }
        if (target === link) {
          owners.push(pid);
          break;
        }
      }
    }
    if (owners.length === 0) return { ok: false, reason: 'no process holds the connection (it exited?)' };
    const binaries = new Map<number, string>();
    for (const pid of owners) {
      const exe = exeOf(`${proc}/${pid}`);
      if (exe === null) return { ok: false, reason: `cannot read the executable of pid ${pid}`, pid };
      binaries.set(pid, exe);
    }
    const distinct = new Set(binaries.values());
    const pid = owners[0] as number;
    const binary = binaries.get(pid) as string;
    if (distinct.size > 1) {
      return {
        ok: false,
        reason: `connection held by several processes with different executables (${[...distinct].join(', ')})`,
        finding: 'ambiguous-identity',
        pid,
      };
    }
    const ancestors: string[] = [];
    let cur = pid;
    for (let i = 0; i < MAX_ANCESTORS; i++) {
      const ppid = parentOf(`${proc}/${cur}`);
      if (ppid === null || ppid <= 0 || ppid === cur || ppid === rootPid) break;
      const exe = exeOf(`${proc}/${ppid}`);
      if (exe !== null) ancestors.push(exe);
      if (ppid === 1) break;
      cur = ppid;
    }
    let sha256: string | undefined;
    if (this.options.binaryTrust) {
      const verdict = await this.options.binaryTrust.check(`${proc}/${pid}`, binary);
      if (!verdict.ok) return { ok: false, reason: verdict.reason, finding: 'binary-replaced', pid, binary };
      sha256 = verdict.sha256;
    }
    return { ok: true, caller: { pid, binary, ancestors, sha256 } };
  }

  /** The client socket's inode from the sandbox's TCP table (the relay did not send it). */
  private inodeFromTable(query: CallerQuery): number | null {
    const net = `${this.hostProc}/${this.options.netPid}/net`;
    // Reading a table makes the kernel walk the namespace's TCP hash table, so read tcp6 only when
    // the IPv4 table did not have the connection.
    const n = needles(query);
    return (n.v4 ? scanTable(`${net}/tcp`, n.v4) : null) ?? (n.v6 ? scanTable(`${net}/tcp6`, n.v6) : null);
  }

  /** Closes the sandbox's procfs if it was held open. */
  close(): void {
    this.closing = true;
    if (this.inflight > 0) return; // the last lookup in flight closes it
    if (this.sandboxProcFd !== null) closeSync(this.sandboxProcFd);
    this.sandboxProcFd = null;
  }

  /**
   * The sandbox's procfs as a path through a descriptor held open (`/proc/self/fd/N`), or null.
   * It is opened and checked to be a procfs once: whatever the sandbox later mounts at its /proc,
   * paths through the descriptor stay on the mount that was checked, and no statfs is paid per
   * connection.
   */
  private sandboxProcPath(): string | null {
    if (this.closing) return null; // its sandbox is going: nothing more is opened for it
    if (this.sandboxProcFd !== null) return `/proc/self/fd/${this.sandboxProcFd}`;
    const sandboxProc = this.options.sandboxProc;
    if (!sandboxProc) return null;
    let fd: number;
    try {
      fd = openSync(sandboxProc, O_PATH | constants.O_DIRECTORY);
    } catch {
      return null;
    }
    if (!isProcfs(`/proc/self/fd/${fd}`)) {
      closeSync(fd);
      return null;
    }
    this.sandboxProcFd = fd;
    return `/proc/self/fd/${fd}`;
  }

  /** Which procfs to scan and which pids in it are candidates. */
  private scope(): { proc: string; rootPid: number; candidates: number[] } {
    const sandboxProc = this.sandboxProcPath();
    if (sandboxProc) {
      return {
        proc: sandboxProc,
        rootPid: this.options.sandboxRootPid ?? 1,
        candidates: pidsIn(sandboxProc),
      };
    }
    let netns: string;
    try {
      netns = readlinkSync(`${this.hostProc}/${this.options.netPid}/ns/net`);
    } catch {
      return { proc: this.hostProc, rootPid: this.rootPid, candidates: [] };
    }
    const candidates = pidsIn(this.hostProc).filter((pid) => {
      try {
        return readlinkSync(`${this.hostProc}/${pid}/ns/net`) === netns;
      } catch {
        return false;
      }
    });
    return { proc: this.hostProc, rootPid: this.rootPid, candidates };
  }
}

function isProcfs(path: string): boolean {
  try {
    return statfsSync(path).type === PROC_SUPER_MAGIC;
  } catch {
    return false;
  }
}

function pidsIn(proc: string): number[] {
  const out: number[] = [];
  for (const name of readdirSync(proc)) {
    const c = name.charCodeAt(0);
    if (c < 48 || c > 57) continue;
    const pid = Number(name);
    if (Number.isInteger(pid)) out.push(pid);
  }
  return out;
}
