/**
 * `sandbox exec` and `sandbox connect` through the gateway: an upgraded HTTP connection becomes
 * the client's end of an exec on the sandbox's control socket (docs/architecture.md, "The control
 * socket"). The client sends one JSON request line (argv, env, cwd, tty, cols, rows); the gateway
 * checks it, opens the control socket, sends the init its own request line, and from then on
 * copies bytes both ways: the frames (stdin, resize, signal; stdout, stderr, exit) are the init's,
 * end to end, so the gateway adds no buffering of its own and backpressure reaches both ends.
 */
import type { Duplex } from 'node:stream';
import { z } from 'zod';
import { connectControl } from '../../sandbox/control/control-common.js';
import { FRAME } from '../../sandbox/control/control-exec.js';
import { ApiError } from '../api/errors.js';
import { splice } from './splice.js';

/** The request line is JSON, small: a command line and its environment. */
const MAX_REQUEST = 64 * 1024;

export const execRequest = z.object({
  argv: z.array(z.string()).min(1).max(4096),
  env: z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/), z.string()).default({}),
  cwd: z.string().startsWith('/').optional(),
  tty: z.boolean().default(false),
  cols: z.number().int().min(1).max(65535).optional(),
  rows: z.number().int().min(1).max(65535).optional(),
});
export type ExecRequest = z.infer<typeof execRequest>;

/** How long a client that upgraded may take to send its request line. */
const REQUEST_PATIENCE_MS = 30_000;

/**
 * Reads the client's request line from an upgraded socket (the bytes after it stay unread). A
 * client that upgrades and sends nothing is refused after `patienceMs`, not kept for good.
 */
export function readRequestLine(
  socket: Duplex,
  head: Buffer,
  patienceMs = REQUEST_PATIENCE_MS,
): Promise<{ request: ExecRequest; rest: Buffer }> {
  return new Promise((resolve, reject) => {
    let buffered = head;
    const fail = (message: string) => {
      cleanup();
      reject(new ApiError('INVALID_INPUT', message));
    };
    const timer = setTimeout(
      () => fail(`no exec request within ${patienceMs / 1000} s of the upgrade`),
      patienceMs,
    );
    timer.unref();
    const onData = (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      look();
    };
    const onEnd = () => fail('the connection ended before the exec request');
    const onClose = () => fail('the connection closed before the exec request');
    const cleanup = () => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.off('close', onClose);
      socket.pause();
    };
    const look = () => {
      const nl = buffered.indexOf(0x0a);
      if (nl < 0) {
        if (buffered.length > MAX_REQUEST) fail(`the exec request is over ${MAX_REQUEST} bytes`);
        return;
      }
      cleanup();
      let parsed: unknown;
      try {
        parsed = JSON.parse(buffered.subarray(0, nl).toString('utf8'));
      } catch {
        return reject(new ApiError('INVALID_INPUT', 'the exec request is not JSON'));
      }
      const r = execRequest.safeParse(parsed);
      if (!r.success) {
        const issue = r.error.issues[0]!;
        return reject(new ApiError('INVALID_INPUT', `exec ${issue.path.join('.')}: ${issue.message}`));
      }
      resolve({ request: r.data, rest: buffered.subarray(nl + 1) });
    };
    socket.on('data', onData);
    socket.once('end', onEnd);
    socket.once('close', onClose);
    look();
  });
}

/** How long a refused client may take to read the refusal and hang up before it is cut off. */
const REFUSAL_GRACE_MS = 30_000;

/**
 * Answers a client whose request line did not come, or was not an exec request, after the 101: a
 * frame it reads like the init's own refusals (ERROR), then the end. A client that has already
 * hung up gets nothing; one that keeps its end open is cut off after `graceMs`.
 */
export function refuseExec(socket: Duplex, message: string, graceMs = REFUSAL_GRACE_MS): void {
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  socket.end(frame(FRAME.ERROR, message));
  const timer = setTimeout(() => socket.destroy(), graceMs);
  timer.unref();
  socket.once('close', () => clearTimeout(timer));
}

/** A frame of the init's protocol (type, u32 length, payload), as the gateway writes its own. */
function frame(type: number, text: string): Buffer {
  const payload = Buffer.from(text);
  const head = Buffer.alloc(5);
  head[0] = type;
  head.writeUInt32BE(payload.length, 1);
  return Buffer.concat([head, payload]);
}

/**
 * Joins the client's socket to an exec on the control socket at `controlPath`. A `notice` goes to
 * the client first, as a STDERR frame: the gateway's word, ahead of everything the command says.
 */
export function bridgeExec(
  client: Duplex,
  controlPath: string,
  request: ExecRequest,
  rest: Buffer,
  notice: string | null = null,
): void {
  if (notice !== null) client.write(frame(FRAME.STDERR, `${notice}\n`));
  const init = connectControl(controlPath);
  const line = {
    op: 'exec',
    argv: request.argv,
    env: Object.entries(request.env).map(([k, v]) => `${k}=${v}`),
    ...(request.cwd !== undefined ? { cwd: request.cwd } : {}),
    tty: request.tty,
    ...(request.cols !== undefined ? { cols: request.cols } : {}),
    ...(request.rows !== undefined ? { rows: request.rows } : {}),
  };
  init.write(`${JSON.stringify(line)}\n`);
  if (rest.length) init.write(rest);
  splice(client, init);
}

const SWITCHING =
  'HTTP/1.1 101 Switching Protocols\r\nUpgrade: carapace-stream\r\nConnection: Upgrade\r\n\r\n';

/**
 * Answers an upgraded exec: the 101, the client's request line, then the bridge to the control
 * socket at `controlPath`. A request line that is missing or malformed is refused after the 101
 * as an ERROR frame, which the client reads like the init's own refusals (refuseExec); `onRefused`
 * hears of it first. `onRequest` puts the request on the record before anything runs; `notice`, if
 * any, reaches the client's stderr before the command's output.
 */
export async function answerExec(
  socket: Duplex,
  head: Buffer,
  controlPath: string,
  onRequest: (request: ExecRequest) => void,
  onRefused?: () => void,
  notice: string | null = null,
): Promise<void> {
  socket.write(SWITCHING);
  let read;
  try {
    read = await readRequestLine(socket, head);
  } catch (err) {
    onRefused?.();
    refuseExec(socket, (err as Error).message);
    return;
  }
  onRequest(read.request);
  bridgeExec(socket, controlPath, read.request, read.rest, notice);
}
