/** Facts about the host's processes, read from /proc. */
import { readdirSync, readFileSync } from 'node:fs';

/** The uids (real, effective, saved, filesystem) of every process on the host, from /proc. */
export function runningUids(): Set<number> {
  const uids = new Set<number>();
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      const line = /^Uid:\s+(.*)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
      for (const u of line?.split(/\s+/) ?? []) uids.add(Number(u));
    } catch {
      // gone meanwhile
    }
  }
  return uids;
}

/** A process's start time (clock ticks since boot, /proc/<pid>/stat field 22), or null if gone. */
export function processStart(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(fields[19]);
  } catch {
    return null;
  }
}

let own: { pid: number; start: number | null } | null = null;

/** This process's own start time: it never changes, so it is read once (a start used to read it twice). */
export function ownStart(): number | null {
  if (own?.pid !== process.pid) own = { pid: process.pid, start: processStart(process.pid) };
  return own.start;
}

/** What a tree of processes uses: CPU time so far and resident memory now. */
export interface TreeUsage {
  /** User + system CPU seconds of every live process in the tree and of every child it reaped. */
  cpuSeconds: number;
  /** The sum of their resident set sizes (pages shared between them are counted once per process). */
  rssBytes: number;
  processes: number;
}

/** /proc reports CPU times in USER_HZ, which Linux fixes at 100 for user space on every arch. */
const USER_HZ = 100;
let pageBytes: number | null = null;

/** The page size: this process's resident bytes over its resident pages (/proc/self/statm). */
function pageSize(): number {
  if (pageBytes === null) {
    const pages = Number(readFileSync('/proc/self/statm', 'latin1').split(' ')[1]);
    const raw = process.memoryUsage.rss() / pages;
    // A power of two near the ratio (the two reads are not simultaneous).
    pageBytes = 2 ** Math.round(Math.log2(raw));
  }
  return pageBytes;
}

/**
 * The usage of `root` and its descendants, walked through the host's /proc (each thread's
 * `children`); null when `root` is gone. Exited processes count through their parents: a reaped
 * child's time is in its parent's cutime and cstime (not when the parent ignores SIGCHLD: then it
 * is lost, and the sum can fall). Bounded: at most `maxReads` files are read however many
 * processes and threads the tree holds, so a sandbox cannot make the walk long; a listed child
 * whose parent is not the process that listed it (its pid was reused meanwhile) is skipped, so the
 * walk never leaves the tree.
 */
export function treeUsage(root: number, maxReads = 1024): TreeUsage | null {
  const usage: TreeUsage = { cpuSeconds: 0, rssBytes: 0, processes: 0 };
  const queue: { pid: number; parent: number | null }[] = [{ pid: root, parent: null }];
  let ticks = 0;
  let pages = 0;
  let reads = 0;
  const read = (path: string): string | null => {
    if (reads++ >= maxReads) return null;
    try {
      return readFileSync(path, 'latin1');
    } catch {
      return null;
    }
  };
  while (queue.length > 0 && reads < maxReads) {
    const { pid, parent } = queue.shift() as { pid: number; parent: number | null };
    const stat = read(`/proc/${pid}/stat`);
    if (stat === null) {
      if (pid === root) return null;
      continue; // gone meanwhile: its time is its parent's now
    }
    // After the command name: state ppid … utime(12) stime(13) cutime(14) cstime(15) … rss(22).
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (parent !== null && Number(f[1]) !== parent) continue;
    ticks += Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
    pages += Number(f[21]);
    usage.processes++;
    let tasks: string[];
    try {
      tasks = readdirSync(`/proc/${pid}/task`);
      reads++;
    } catch {
      continue;
    }
    for (const tid of tasks) {
      const children = read(`/proc/${pid}/task/${tid}/children`);
      if (children === null) continue;
      for (const child of children.split(' '))
        if (child !== '' && child !== '\n') queue.push({ pid: Number(child), parent: pid });
    }
  }
  usage.cpuSeconds = ticks / USER_HZ;
  usage.rssBytes = pages * pageSize();
  return usage;
}

let bootMs: number | null = null;

/** When a process started, in ms since the epoch (/proc/stat's btime plus its start ticks); null if gone. */
export function processStartedAt(pid: number): number | null {
  const ticks = processStart(pid);
  if (ticks === null || !Number.isFinite(ticks)) return null;
  bootMs ??= Number(/^btime (\d+)$/m.exec(readFileSync('/proc/stat', 'latin1'))?.[1] ?? NaN) * 1000;
  return Number.isFinite(bootMs) ? bootMs + (ticks * 1000) / USER_HZ : null;
}

/**
 * Usage readings of process trees, by key (a sandbox's id) and root pid. A tree is walked at most
 * once every `freshMs` (every scrape, term and dashboard asks), and its CPU never goes back while
 * the root is the same: a child reaped without passing its time on leaves the tree's sum.
 */
export class UsageMeter {
  private readonly last = new Map<string, { pid: number; at: number; usage: TreeUsage }>();

  constructor(private readonly freshMs = 1_000) {}

  read(key: string, pid: number): TreeUsage | null {
    const now = Date.now();
    const last = this.last.get(key);
    const same = last !== undefined && last.pid === pid;
    if (same && now - last.at < this.freshMs) return last.usage;
    const usage = treeUsage(pid);
    if (usage === null) return null;
    if (same) usage.cpuSeconds = Math.max(usage.cpuSeconds, last.usage.cpuSeconds);
    this.last.set(key, { pid, at: now, usage });
    return usage;
  }

  forget(key: string): void {
    this.last.delete(key);
  }
}
