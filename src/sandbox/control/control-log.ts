/**
 * The control socket's `log` op: hands a sandbox's init the file its agent's output goes to from
 * the next line on (native/logs.c), with the limit in bytes that file may reach. The file is a
 * descriptor the host opened (the gateway's log rotation, gateway/sandboxes/agent-log.ts); it
 * travels with the request line as SCM_RIGHTS, which Node's sockets cannot send, so a small static
 * program does (native/carapace-sendfd.c), once per rotation.
 *
 * Security: the init takes the descriptor as it is and checks only that it is a regular file open
 * for appending; which file it is stays the host's decision, made without following a name the
 * sandbox could write. The request goes to the control socket as every other op does.
 */
import { spawn } from 'node:child_process';
import { closeSync, constants as fsConstants, openSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import { nativeFdSender } from '../native-paths.js';
import { O_PATH } from '../host-paths/untrusted-tree.js';
import { ControlError } from './control-common.js';

/** What fits in sockaddr_un's sun_path, its NUL included (as control-common.ts). */
const SUN_PATH_MAX = 107;

/**
 * Sends `fd` to the init at `socketPath` as its next log file. `limitBytes` 0 means no limit.
 * Rejects with CONTROL_REFUSED (the init's reason) or CONTROL_UNREACHABLE.
 */
export async function handOverLog(socketPath: string, fd: number, limitBytes: number): Promise<void> {
  if (!Number.isInteger(limitBytes) || limitBytes < 0)
    throw new ControlError('BAD_REQUEST', `a log limit is a whole number of bytes, got ${limitBytes}`);
  // A path too long for a socket address is reached through an fd of its directory (fd 4).
  let dirFd: number | null = null;
  let path = socketPath;
  if (Buffer.byteLength(socketPath) > SUN_PATH_MAX) {
    dirFd = openSync(dirname(socketPath), O_PATH | fsConstants.O_DIRECTORY);
    path = `/proc/self/fd/4/${basename(socketPath)}`;
  }
  try {
    const { code, stdout, stderr } = await new Promise<{
      code: number | null;
      stdout: string;
      stderr: string;
    }>((resolve, reject) => {
      const child = spawn(nativeFdSender(), [path, JSON.stringify({ op: 'log', limit: limitBytes })], {
        env: {},
        stdio: ['ignore', 'pipe', 'pipe', fd, ...(dirFd !== null ? [dirFd] : [])],
      });
      let out = '';
      let err = '';
      child.stdout?.on('data', (d: Buffer) => (out += String(d)));
      child.stderr?.on('data', (d: Buffer) => (err += String(d)));
      child.on('error', reject);
      child.on('close', (exitCode) => resolve({ code: exitCode, stdout: out, stderr: err }));
    });
    if (code !== 0)
      throw new ControlError(
        'CONTROL_UNREACHABLE',
        `cannot hand the log file to ${socketPath}: ${stderr.trim() || `carapace-sendfd exited ${String(code)}`}`,
      );
    let answer: Record<string, unknown>;
    try {
      answer = JSON.parse(stdout) as Record<string, unknown>;
    } catch {
      throw new ControlError('CONTROL_PROTOCOL', `an answer that is not JSON: ${stdout.trim()}`);
    }
    if (answer.ok !== true)
      throw new ControlError(
        'CONTROL_REFUSED',
        typeof answer.message === 'string' ? answer.message : JSON.stringify(answer),
        typeof answer.errno === 'number' ? answer.errno : undefined,
      );
  } finally {
    if (dirFd !== null) closeSync(dirFd);
  }
}
