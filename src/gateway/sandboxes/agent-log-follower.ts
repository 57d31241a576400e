/**
 * `sandbox logs -f` of the agent's output: what its log gets from now on, across rotations
 * (agent-log.ts), in order and once.
 */
import { closeSync, fstatSync, read, watch } from 'node:fs';
import { StringDecoder } from 'node:string_decoder';
import type { AgentLogs } from './agent-log.js';

/**
 * Calls `onLine` for every complete line the agent's log gets from now on: from `from` (its current
 * file, open, and how much of it was read), and across rotations (agent-log.ts). The file is read
 * to its end when the directory says something of the log changed; when a rotation has moved it,
 * it is read to its end once the file after it has a line (the init writes the old one until it
 * switches, and the new one only after), then that file from its start, and so on to the current
 * one: two rotations before the follower looks skip no file. Every name is
 * opened through the directory's descriptor, never through a symlink. Returns the stop function.
 */
/** A descriptor's file as AgentLogs.identity names it ("DEV:INO"). */
function identity(fd: number): string {
  const st = fstatSync(fd, { bigint: true });
  return `${st.dev}:${st.ino}`;
}

export function followAgentLog(
  logs: AgentLogs,
  id: string,
  from: { fd: number; size: number } | null,
  onLine: (text: string) => void,
): () => void {
  const base = logs.base(id);
  let fd = from?.fd ?? null;
  let offset = from?.size ?? 0;
  let partial = '';
  // A character cut by the end of a read is kept for the next: the lines hold raw UTF-8.
  let decoder = new StringDecoder('utf8');
  let stopped = false;
  let reading: Promise<void> | null = null;
  let again = false;
  const buf = Buffer.allocUnsafe(64 * 1024);
  const readToEnd = async (): Promise<void> => {
    if (fd === null) return;
    const held = fd;
    for (;;) {
      const n = await new Promise<number>((resolve) =>
        read(held, buf, 0, buf.length, offset, (err, bytes) => resolve(err ? 0 : bytes)),
      );
      if (n === 0 || stopped) return;
      offset += n;
      partial += decoder.write(buf.subarray(0, n));
      let nl: number;
      while ((nl = partial.indexOf('\n')) >= 0) {
        onLine(partial.slice(0, nl));
        partial = partial.slice(nl + 1);
      }
    }
  };
  /**
   * The file that came after the one held, once it has a line; else null. Its name is the one
   * after the held file's among the generations (oldest first, current last); when the held file
   * is gone (dropped by rotations that came faster than this looked), every file left is newer, so
   * it is the oldest one there. Names are read again after the open: a rotation meanwhile means
   * looking again, so that no file in between is skipped.
   */
  const successor = (): { fd: number; size: number } | null => {
    const names = logs.names(id);
    const heldId = fd === null ? null : identity(fd);
    for (let tries = 0; tries < 8; tries++) {
      const ids = names.map((n) => logs.identity(n));
      const at = heldId === null ? names.length - 1 : ids.indexOf(heldId) + 1;
      const k = ids.findIndex((v, i) => i >= at && v !== null);
      if (k < 0) return null;
      const next = logs.dir.openForReading(names[k]!);
      if (!next) continue;
      const moved = identity(next.fd) !== ids[k] || names.some((n, i) => logs.identity(n) !== ids[i]);
      if (moved || (heldId !== null && next.size === 0)) {
        closeSync(next.fd);
        if (moved) continue;
        return null;
      }
      return next;
    }
    return null; // rotating without pause: the next change to the directory looks again
  };
  const update = (): void => {
    if (reading) {
      again = true;
      return;
    }
    reading = drain().finally(() => (reading = null));
  };
  const drain = async (): Promise<void> => {
    do {
      again = false;
      await readToEnd();
      const next = stopped ? null : successor();
      if (next) {
        await readToEnd(); // what the init wrote to the old file before it switched
        if (fd !== null) closeSync(fd);
        fd = next.fd;
        offset = 0;
        partial = '';
        decoder = new StringDecoder('utf8');
        again = true;
      }
    } while (again && !stopped);
  };
  const watcher = watch(logs.dir.path, (_e, file) => {
    if (file !== null && (file === base || file.startsWith(`${base}.`))) update();
  });
  watcher.on('error', () => {});
  update(); // what came between the reading and the watch
  return () => {
    stopped = true;
    watcher.close();
    // A read in progress holds the descriptor until it returns.
    void (reading ?? Promise.resolve()).then(() => {
      if (fd !== null) closeSync(fd);
      fd = null;
    });
  };
}
