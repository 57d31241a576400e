/**
 * The host's client for a sandbox's control socket: what a gateway does in a running sandbox
 * without being bwrap's parent and without pipes to its processes, so that the sandbox outlives
 * the gateway and a restarted gateway picks it up again (docs/architecture.md, "The control
 * socket"). carapace-init (PID 1) serves the socket, `control.sock` in the sandbox's control
 * directory (`StartedSandbox.control`).
 *
 *   const control = new SandboxControl(started.control.socket);
 *   const p = control.exec({ argv: ['sh', '-c', 'echo hi'] });   // stdin, stdout, stderr, exited
 *   const sock = await control.connect(8080);                     // a Duplex to 127.0.0.1:8080 inside
 *   for await (const e of control.events()) …                     // refused connects, the exit
 *   await control.status(); await control.signal('SIGTERM');
 *   await control.log(fd, limitBytes);                             // the agent's next log file
 *
 * Security: whoever can connect to the socket controls the sandbox (runs anything in it, as
 * confined as the agent). The directory is the sandbox uid's, 0700, and the socket 0600; nothing
 * inside the sandbox can reach it (test/sandbox/control-attacks.test.ts). Every call opens its
 * own connection: one slow exec never holds up another call.
 */
import type { Socket } from 'node:net';
import { connectControl, ControlError, signalNumber } from './control-common.js';
import { startExec, type ExecOptions, type ExecProcess } from './control-exec.js';
import { handOverLog } from './control-log.js';

export { ControlError, type ControlErrorCode } from './control-common.js';
export type { ExecOptions, ExecProcess } from './control-exec.js';

/** The agent, as PID 1 sees it. */
export interface ControlStatus {
  /** The agent's pid in the sandbox's pid namespace. */
  agentPid: number;
  running: boolean;
  /** Its exit code once it has exited (the sandbox is then about to end), else null. */
  exit: number | null;
  /** Unix ms: when it started, or when it exited. */
  since: number;
}

/** A connect the sandbox refused (docs/architecture.md, "Event lines"). */
export interface ControlConnectEvent {
  seq: number;
  event: 'connect';
  pid: number;
  binary?: string;
  protocol: 'tcp' | 'udp' | 'other';
  family: 'ipv4' | 'ipv6';
  address: string;
  port: number;
  refused_by: 'landlock' | 'network';
}

/** The agent exited: the last event of a sandbox. */
export interface ControlExitEvent {
  seq: number;
  event: 'exit';
  code: number;
}

/**
 * The agent's log file is past half its limit, or full (`dropped` > 0: bytes of output dropped
 * since): the init asks for a new one (control.log). `file` is the full file's identity,
 * "DEV:INO", as fstat gives it.
 */
export interface ControlLogEvent {
  seq: number;
  event: 'log';
  bytes: number;
  limit: number;
  file: string;
  dropped: number;
}

export type ControlEvent = ControlConnectEvent | ControlExitEvent | ControlLogEvent;

export interface EventStream extends AsyncIterable<ControlEvent> {
  /** Stops listening (the event last delivered was not acknowledged: the next subscriber gets it). */
  close(): void;
}

/** Lines held for a slow consumer before the socket is paused (the init then holds the connects). */
const EVENTS_HELD = 256;

export class SandboxControl {
  constructor(readonly socketPath: string) {}

  /** Runs a command in the sandbox, as confined as the agent. */
  exec(opts: ExecOptions): ExecProcess {
    return startExec(this.socketPath, opts);
  }

  /**
   * A connection to 127.0.0.1:port (or [::1]:port) inside the sandbox, relayed by PID 1: how a
   * host port is forwarded to a server the agent listens on. Rejects with CONTROL_REFUSED (and the
   * errno, ECONNREFUSED when nothing listens) when the connection cannot be made.
   */
  async connect(port: number, family: 4 | 6 = 4): Promise<Socket> {
    if (!Number.isInteger(port) || port < 1 || port > 65535)
      throw new ControlError('BAD_REQUEST', `port must be from 1 to 65535, got ${port}`);
    const { socket, answer } = await this.request({ op: 'connect', port, family }, false);
    try {
      refusedUnlessOk(answer);
    } catch (err) {
      socket.destroy();
      throw err;
    }
    return socket;
  }

  async status(): Promise<ControlStatus> {
    const { answer } = await this.request({ op: 'status' });
    const { agent_pid: agentPid, running, exit, since } = answer;
    if (
      typeof agentPid !== 'number' ||
      typeof running !== 'boolean' ||
      (exit !== null && typeof exit !== 'number') ||
      typeof since !== 'number'
    )
      throw new ControlError(
        'CONTROL_PROTOCOL',
        `a status the client does not understand: ${JSON.stringify(answer)}`,
      );
    return { agentPid, running, exit, since };
  }

  /** Sends a signal to the agent (its pid, as PID 1 forwards SIGTERM). */
  async signal(sig: NodeJS.Signals | number): Promise<void> {
    const { answer } = await this.request({ op: 'signal', signal: signalNumber(sig) });
    refusedUnlessOk(answer);
  }

  /**
   * Hands the init `fd` (a regular file open for appending) as its agent's log file from the next
   * line on, with the bytes it may hold (0: no limit); the caller keeps its own copy of `fd`.
   */
  log(fd: number, limitBytes: number): Promise<void> {
    return handOverLog(this.socketPath, fd, limitBytes);
  }

  /**
   * The sandbox's events, from the oldest one no subscriber has acknowledged. Each event is
   * acknowledged when the next one is asked for: the one the caller was handling when it died,
   * threw or broke out of its loop comes again to the next subscriber, so nothing is lost across
   * a gateway restart (compare `seq` to drop what was seen). The init keeps one subscriber: a new
   * one replaces the old. The iteration ends when the sandbox does; it throws CONTROL_UNREACHABLE
   * when there is no socket.
   */
  events(): EventStream {
    const socket = connectControl(this.socketPath);
    socket.write(`${JSON.stringify({ op: 'events', ack: true })}\n`);
    const queue: ControlEvent[] = [];
    let ended = false;
    let failure: ControlError | null = null;
    let wake: (() => void) | null = null;
    let connected = false;
    let lastDelivered: number | null = null;
    const notify = () => {
      const w = wake;
      wake = null;
      w?.();
    };
    let text = '';
    socket.setEncoding('utf8');
    socket.on('connect', () => (connected = true));
    socket.on('data', (chunk: string) => {
      text += chunk;
      let nl: number;
      while ((nl = text.indexOf('\n')) >= 0) {
        const line = text.slice(0, nl);
        text = text.slice(nl + 1);
        try {
          queue.push(JSON.parse(line) as ControlEvent);
        } catch {
          failure = new ControlError('CONTROL_PROTOCOL', `an event line that is not JSON: ${line}`);
          socket.destroy();
        }
      }
      if (queue.length >= EVENTS_HELD) socket.pause();
      notify();
    });
    socket.on('error', (err) => {
      if (!connected)
        failure = new ControlError(
          'CONTROL_UNREACHABLE',
          `cannot reach the control socket ${this.socketPath}: ${err.message}`,
        );
    });
    socket.on('close', () => {
      ended = true;
      notify();
    });
    const ack = () => {
      if (lastDelivered !== null && !socket.destroyed) socket.write(`{"ack":${lastDelivered}}\n`);
      lastDelivered = null;
    };
    // No acknowledgement here: a loop that ends by an exception must not have its event taken
    // for handled.
    const close = () => socket.end();
    return {
      close,
      [Symbol.asyncIterator]: () => ({
        next: async (): Promise<IteratorResult<ControlEvent>> => {
          ack();
          for (;;) {
            const e = queue.shift();
            if (e) {
              if (queue.length < EVENTS_HELD) socket.resume();
              lastDelivered = e.seq;
              return { value: e, done: false };
            }
            if (failure) throw failure;
            if (ended) return { value: undefined, done: true };
            await new Promise<void>((resolve) => (wake = resolve));
          }
        },
        return: (): Promise<IteratorResult<ControlEvent>> => {
          close();
          return Promise.resolve({ value: undefined, done: true });
        },
      }),
    };
  }

  /**
   * Sends one request line and reads one answer line. With `close`, the connection ends there;
   * without, it is handed back as a fresh stream (not flowing until the caller reads or pipes it),
   * with whatever followed the line put back in front.
   */
  private request(
    body: Record<string, unknown>,
    close = true,
  ): Promise<{ socket: Socket; answer: Record<string, unknown> }> {
    return new Promise((resolve, reject) => {
      const socket = connectControl(this.socketPath);
      let connected = false;
      let got: Buffer = Buffer.alloc(0);
      const fail = (err: ControlError) => {
        socket.destroy();
        reject(err);
      };
      // 'readable' rather than 'data': nothing flows past the line before the caller has the socket.
      const onReadable = () => {
        let chunk: Buffer | null;
        while ((chunk = socket.read() as Buffer | null) !== null) {
          got = Buffer.concat([got, chunk]);
          const nl = got.indexOf(0x0a);
          if (nl < 0) continue;
          socket.off('readable', onReadable);
          socket.off('close', onClose);
          const line = got.subarray(0, nl).toString('utf8');
          const rest = got.subarray(nl + 1);
          let answer: Record<string, unknown>;
          try {
            answer = JSON.parse(line) as Record<string, unknown>;
          } catch {
            return fail(new ControlError('CONTROL_PROTOCOL', `an answer that is not JSON: ${line}`));
          }
          if (close) socket.destroy();
          else if (rest.length > 0) socket.unshift(rest);
          return resolve({ socket, answer });
        }
      };
      const onClose = () =>
        reject(
          new ControlError(
            'CONTROL_CLOSED',
            `the control connection closed before the answer to ${String(body.op)}`,
          ),
        );
      socket.on('connect', () => (connected = true));
      socket.on('readable', onReadable);
      socket.on('close', onClose);
      socket.on('error', (err) => {
        if (!connected)
          fail(
            new ControlError(
              'CONTROL_UNREACHABLE',
              `cannot reach the control socket ${this.socketPath}: ${err.message}`,
            ),
          );
      });
      socket.write(`${JSON.stringify(body)}\n`);
    });
  }
}

function refusedUnlessOk(answer: Record<string, unknown>): void {
  if (answer.ok === true) return;
  const errno = typeof answer.errno === 'number' ? answer.errno : undefined;
  const message = typeof answer.message === 'string' ? answer.message : JSON.stringify(answer);
  throw new ControlError('CONTROL_REFUSED', message, errno);
}
