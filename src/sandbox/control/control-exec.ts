/**
 * One `exec` on a sandbox's control socket, from the host: the request line, then frames both ways
 * (docs/architecture.md, "The control socket"). Each frame is 1 byte of type, 4 bytes of length
 * (big-endian) and the payload. To the init: STDIN, STDIN_EOF, RESIZE (u16 cols, u16 rows),
 * SIGNAL (i32); from it: STDOUT, STDERR, ERROR (a line saying why the command could not start),
 * EXIT (i32: the exit code, 128+signal when a signal ended it, 126/127 when the command could not
 * run / was not found).
 *
 * Backpressure both ways: stdin's writes complete when the socket takes them (the init reads the
 * socket only as fast as the process reads its stdin); a full stdout or stderr stream pauses the
 * socket (and so, through the init's bounded buffer, the process's writes).
 */
import type { Socket } from 'node:net';
import { Readable, Writable } from 'node:stream';
import { connectControl, ControlError, signalNumber } from './control-common.js';

export const FRAME = {
  STDIN: 0x01,
  STDIN_EOF: 0x02,
  RESIZE: 0x03,
  SIGNAL: 0x04,
  STDOUT: 0x11,
  STDERR: 0x12,
  EXIT: 0x13,
  ERROR: 0x14,
} as const;

const HEADER = 5;
/** The init refuses a larger frame; stdin is sent in pieces of at most this. */
const STDIN_PIECE = 64 * 1024;

export interface ExecOptions {
  /** The command and its arguments; the command is searched in PATH like the agent's. */
  argv: string[];
  /** Added to (or replacing in) the agent's environment. */
  env?: Record<string, string> | undefined;
  /** Absolute; default: the init's own working directory (/sandbox). */
  cwd?: string | undefined;
  /** A pty (stdout carries the terminal; stderr stays empty) of cols × rows (default 80 × 24). */
  tty?: boolean | undefined;
  cols?: number | undefined;
  rows?: number | undefined;
}

export interface ExecProcess {
  /** end() sends STDIN_EOF (with a tty: the terminal's EOF character, as a user types ^D). */
  stdin: Writable;
  stdout: Readable;
  /** Empty with a tty. */
  stderr: Readable;
  /** The pty's window size (the process gets SIGWINCH); nothing without a tty. */
  resize(cols: number, rows: number): void;
  /** Delivered to the process group. */
  signal(sig: NodeJS.Signals | number): void;
  /**
   * The exit code. Rejects with a ControlError when no process ran at all (`EXEC_REFUSED`: the
   * limit on execs, an agent that has exited, a bad request), when the socket cannot be reached
   * (`CONTROL_UNREACHABLE`), or when the connection ended without an EXIT (`CONTROL_CLOSED`).
   */
  exited: Promise<number>;
  /** Why the command did not start (the ERROR frame before EXIT 125, 126 or 127), else null. */
  readonly failure: string | null;
  /** Disconnects: the process and its group get SIGHUP, as from a closed terminal. */
  close(): void;
}

function frame(type: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const header = Buffer.alloc(HEADER);
  header[0] = type;
  header.writeUInt32BE(payload.length, 1);
  return Buffer.concat([header, payload]);
}

export function startExec(socketPath: string, opts: ExecOptions): ExecProcess {
  if (opts.argv.length === 0) throw new ControlError('BAD_REQUEST', 'exec needs a command (argv is empty)');
  const request = {
    op: 'exec',
    argv: opts.argv,
    env: Object.entries(opts.env ?? {}).map(([k, v]) => `${k}=${v}`),
    ...(opts.cwd !== undefined ? { cwd: opts.cwd } : {}),
    tty: opts.tty === true,
    ...(opts.cols !== undefined ? { cols: opts.cols } : {}),
    ...(opts.rows !== undefined ? { rows: opts.rows } : {}),
  };
  return execOver(connectControl(socketPath), request, socketPath);
}

/**
 * The client's side of an exec on a stream that is already open: the control socket, or a
 * gateway connection upgraded for exec (which forwards the same frames, src/gateway/sandbox-io/exec-bridge.ts).
 * `request` is the first line, as the other end expects it; null when the caller already sent it
 * (with the upgrade request, saving a round trip).
 */
export function execOver(socket: Socket, request: object | null, where: string): ExecProcess {
  const socketPath = where;
  if (request !== null) socket.write(`${JSON.stringify(request)}\n`);

  let failure: string | null = null;
  let settled = false;
  let connected = false;
  let resolveExit: (code: number) => void = () => {};
  let rejectExit: (err: ControlError) => void = () => {};
  const exited = new Promise<number>((resolve, reject) => {
    resolveExit = resolve;
    rejectExit = reject;
  });
  exited.catch(() => {}); // a caller that never looks must not crash the process

  const resume = () => socket.resume();
  const stdout = new Readable({ read: resume });
  const stderr = new Readable({ read: resume });
  const endOutputs = () => {
    stdout.push(null);
    stderr.push(null);
  };

  const stdin = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      if (settled) return callback();
      const pieces: Buffer[] = [];
      for (let off = 0; off < chunk.length; off += STDIN_PIECE)
        pieces.push(frame(FRAME.STDIN, chunk.subarray(off, off + STDIN_PIECE)));
      // Once the process has ended, what is left is dropped, not an error.
      socket.write(Buffer.concat(pieces), () => callback());
    },
    final(callback) {
      if (!settled) socket.write(frame(FRAME.STDIN_EOF));
      callback();
    },
  });

  const settle = (code: number | ControlError) => {
    if (settled) return;
    settled = true;
    endOutputs();
    if (typeof code === 'number') resolveExit(code);
    else rejectExit(code);
  };

  let buffered: Buffer = Buffer.alloc(0);
  if (!socket.connecting) connected = true;
  socket.on('connect', () => (connected = true));
  socket.on('data', (data: Buffer) => {
    buffered = buffered.length ? Buffer.concat([buffered, data]) : data;
    while (buffered.length >= HEADER) {
      const type = buffered[0]!;
      const len = buffered.readUInt32BE(1);
      if (buffered.length < HEADER + len) break;
      const payload = buffered.subarray(HEADER, HEADER + len);
      buffered = buffered.subarray(HEADER + len);
      if (type === FRAME.STDOUT) {
        if (!stdout.push(Buffer.from(payload))) socket.pause();
      } else if (type === FRAME.STDERR) {
        if (!stderr.push(Buffer.from(payload))) socket.pause();
      } else if (type === FRAME.ERROR) {
        failure = payload.toString('utf8');
      } else if (type === FRAME.EXIT && len === 4) {
        settle(payload.readInt32BE(0));
        socket.end();
      } else {
        settle(
          new ControlError(
            'CONTROL_PROTOCOL',
            `a frame of unknown type 0x${type.toString(16)} from the init`,
          ),
        );
        socket.destroy();
        return;
      }
    }
  });
  socket.on('error', (err: NodeJS.ErrnoException) => {
    if (!connected)
      settle(
        new ControlError(
          'CONTROL_UNREACHABLE',
          `cannot reach the control socket ${socketPath}: ${err.message}`,
        ),
      );
    // Otherwise 'close' says what it means (an ERROR alone, a reset after it, …).
  });
  socket.on('close', () => {
    if (failure !== null) settle(new ControlError('EXEC_REFUSED', failure));
    else
      settle(new ControlError('CONTROL_CLOSED', 'the control connection closed before the process exited'));
  });

  return {
    stdin,
    stdout,
    stderr,
    resize(cols, rows) {
      if (settled || socket.destroyed) return;
      const payload = Buffer.alloc(4);
      payload.writeUInt16BE(cols, 0);
      payload.writeUInt16BE(rows, 2);
      socket.write(frame(FRAME.RESIZE, payload));
    },
    signal(sig) {
      if (settled || socket.destroyed) return;
      const payload = Buffer.alloc(4);
      payload.writeInt32BE(signalNumber(sig), 0);
      socket.write(frame(FRAME.SIGNAL, payload));
    },
    exited,
    get failure() {
      return failure;
    },
    close() {
      socket.destroy();
      settle(new ControlError('CONTROL_CLOSED', 'closed by the caller; the process was hung up'));
    },
  };
}
