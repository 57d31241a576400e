/** What the control socket's client (control.ts, control-exec.ts) shares: its errors, signals, connecting. */
import { closeSync, constants as fsConstants, openSync } from 'node:fs';
import { connect, Socket } from 'node:net';
import { basename, dirname } from 'node:path';
import { constants } from 'node:os';
import { at, O_PATH } from '../host-paths/untrusted-tree.js';

export type ControlErrorCode =
  /** The socket is not there, or nobody listens (the sandbox is gone, or never started). */
  | 'CONTROL_UNREACHABLE'
  /** The init answered {"ok":false}: `errno` and the message say why (a port nobody listens on, …). */
  | 'CONTROL_REFUSED'
  /** An exec that ran no process: too many execs, an agent that has exited, a bad request. */
  | 'EXEC_REFUSED'
  /** The connection ended before the answer (or the EXIT) came. */
  | 'CONTROL_CLOSED'
  /** The init said something this client does not understand. */
  | 'CONTROL_PROTOCOL'
  /** The caller's request cannot be sent as it is (checked before anything is sent). */
  | 'BAD_REQUEST';

export class ControlError extends Error {
  override name = 'ControlError';
  constructor(
    readonly code: ControlErrorCode,
    message: string,
    /** The errno the init reported, for CONTROL_REFUSED. */
    readonly errno?: number,
  ) {
    super(message);
  }
}

/** A signal as the number the init delivers (SIGTERM → 15). */
export function signalNumber(sig: NodeJS.Signals | number): number {
  if (typeof sig === 'number') {
    if (!Number.isInteger(sig) || sig < 1 || sig > 64)
      throw new ControlError('BAD_REQUEST', `no signal ${sig}`);
    return sig;
  }
  const n = constants.signals[sig];
  if (n === undefined) throw new ControlError('BAD_REQUEST', `no signal named ${String(sig)}`);
  return n;
}

/** What fits in sockaddr_un's sun_path, its NUL included. */
const SUN_PATH_MAX = 107;

/**
 * A connection to the socket at `path`. A path too long for a Unix socket address (a deep
 * CARAPACE_HOME, a long sandbox name) is reached through an fd of its directory, as the init
 * itself binds it.
 */
export function connectControl(path: string): Socket {
  if (Buffer.byteLength(path) <= SUN_PATH_MAX) return connect(path);
  let dir: number;
  try {
    dir = openSync(dirname(path), O_PATH | fsConstants.O_DIRECTORY);
  } catch (err) {
    // The failure a connect would report, on the socket, where the caller looks for it.
    const socket = new Socket();
    process.nextTick(() => socket.destroy(err as Error));
    return socket;
  }
  const socket = connect(at(dir, basename(path)));
  let open = true;
  const done = () => {
    if (open) closeSync(dir);
    open = false;
  };
  socket.once('connect', done);
  socket.once('close', done);
  return socket;
}
