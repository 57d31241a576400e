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
