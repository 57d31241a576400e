/** The typed errors of the control socket's client (control.ts), and signal names as numbers. */
import { constants } from 'node:os';

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
