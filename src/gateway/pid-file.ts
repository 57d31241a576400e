/**
 * `<run>/gateway.pid`: one gateway per run directory. The file names the gateway's pid and its
 * start time, so a pid the kernel reused for another process is never taken for a gateway, and a
 * file whose gateway is gone (killed, or a zombie its parent has not reaped) is taken over.
 */
import { closeSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import { processStart } from '../sandbox/processes.js';

export class GatewayError extends Error {
  override name = 'GatewayError';
  constructor(
    readonly code: 'GATEWAY_RUNNING',
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
  }
}

/** `<run>/gateway.pid`: one gateway per run directory; a file whose owner is gone is taken over. */
export function takePidFile(path: string): string {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(path, 'wx', 0o644);
      writeSync(fd, `${process.pid} ${processStart(process.pid) ?? 0}\n`);
      closeSync(fd);
      return path;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const [pid, start] = readFileSync(path, 'utf8').trim().split(' ').map(Number);
    const now = pid && !isZombie(pid) ? processStart(pid) : null;
    if (now !== null && (start === 0 || now === start)) {
      throw new GatewayError(
        'GATEWAY_RUNNING',
        `a gateway already runs here (pid ${pid}, ${path}): carapace gateway stop`,
      );
    }
    unlinkSync(path);
  }
  throw new GatewayError('GATEWAY_RUNNING', `cannot take ${path}`);
}

/**
 * Whether `pid` has ended and waits to be reaped. A gateway killed under a parent that reaps late
 * (an init that is not systemd, a container's) keeps its pid and start time as a zombie: it is
 * gone all the same, and the next gateway may take its place.
 */
function isZombie(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z';
  } catch {
    return false;
  }
}

export function releasePidFile(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // gone already
  }
}
