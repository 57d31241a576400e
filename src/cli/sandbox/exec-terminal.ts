/**
 * An exec (in a sandbox, through the gateway) joined to this process's terminal or stdio: raw mode
 * and window resizes with a tty, SIGINT/SIGTERM/SIGHUP forwarded to the command, stdin sent as it
 * comes, stdout and stderr written as they come. Shared by `sandbox exec`/`connect` and by a
 * `carapace run` that a gateway serves; kept small, since `run` loads it on its fastest path.
 */
import type { ExecProcess } from '../../sandbox/control/control-exec.js';

/** Ctrl-P Ctrl-Q, as in docker: leave the session (the shell is hung up), the sandbox runs on. */
const DETACH = Buffer.from([0x10, 0x11]);

export interface TerminalOptions {
  tty: boolean;
  /** Send this process's stdin (else the command's stdin ends at once). */
  stdin: boolean;
  /** Ctrl-P Ctrl-Q leaves the session (with a tty). */
  detachable: boolean;
}

/**
 * Runs `proc` with this process's terminal until it exits. Resolves with its exit code; rejects as
 * `proc.exited` does, after `detached` says whether the user left with the detach keys.
 */
export async function withTerminal(
  proc: ExecProcess,
  o: TerminalOptions,
  onCut: (err: unknown, detached: boolean) => Promise<number>,
): Promise<number> {
  const stdin = process.stdin;
  const raw = o.tty && stdin.isTTY;
  if (raw) stdin.setRawMode(true);
  const onResize = () => proc.resize(process.stdout.columns, process.stdout.rows);
  if (o.tty) process.stdout.on('resize', onResize);
  const signals = (['SIGINT', 'SIGTERM', 'SIGHUP'] as const).map((sig) => {
    const h = () => proc.signal(sig);
    process.on(sig, h);
    return [sig, h] as const;
  });
  let detached = false;
  let over = false;
  if (o.stdin) {
    let last = -1;
    stdin.on('data', (chunk: Buffer) => {
      if (o.detachable && raw) {
        for (let i = 0; i < chunk.length; i++) {
          if (last === DETACH[0] && chunk[i] === DETACH[1]) {
            detached = true;
            proc.close();
            return;
          }
          last = chunk[i]!;
        }
      }
      // Read only as fast as the command reads: a command that never reads its stdin must not
      // have all of ours (`yes |`, a large file) held in this process's memory.
      if (!proc.stdin.write(chunk)) {
        stdin.pause();
        proc.stdin.once('drain', () => {
          if (!over) stdin.resume();
        });
      }
    });
    stdin.on('end', () => proc.stdin.end());
  } else {
    proc.stdin.end();
  }
  // The reader of our stdout or stderr went away (`| head`): as a writer to a closed pipe would,
  // the command gets SIGPIPE (its process group does), and what it writes there after is dropped.
  // Left listening once the command is over: a late write's EPIPE must not end this process.
  let broken = false;
  for (const [from, to] of [
    [proc.stdout, process.stdout],
    [proc.stderr, process.stderr],
  ] as const) {
    to.on('error', (err: NodeJS.ErrnoException) => {
      from.unpipe(to);
      from.resume();
      if (err.code === 'EPIPE' && !broken) {
        broken = true;
        proc.signal('SIGPIPE');
      }
    });
    from.pipe(to, { end: false });
  }
  try {
    return await proc.exited;
  } catch (err) {
    return await onCut(err, detached);
  } finally {
    over = true;
    if (raw) stdin.setRawMode(false);
    stdin.pause();
    process.stdout.off('resize', onResize);
    for (const [sig, h] of signals) process.off(sig, h);
  }
}
