/**
 * The CLI's side of the gateway API: which gateway to talk to, starting one on first use when none
 * answers, and HTTP+JSON over its Unix socket (one-shot requests, JSON-line streams, upgraded
 * streams). Errors keep the gateway's stable code. Which gateway: gateway-endpoint.ts.
 */
import { spawn } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync } from 'node:fs';
import { request, type IncomingMessage } from 'node:http';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { gatewayEndpoint, type GatewayEndpoint } from './gateway-endpoint.js';
import { inFlagWords } from './body-errors.js';
import { printable } from '../../policy/printable.js';

export { gatewayEndpoint, type GatewayEndpoint };

export class GatewayError extends Error {
  override name = 'GatewayError';
  constructor(
    readonly code: string,
    message: string,
    readonly status: number,
    readonly details?: unknown,
    readonly exitCode = status >= 500 ? 1 : status === 404 ? 3 : 2,
  ) {
    super(message);
  }
}

export class GatewayClient {
  constructor(readonly endpoint: GatewayEndpoint) {}

  /** A client for the caller's gateway; starts the caller's own gateway when none answers. */
  static async connect(opts: { start?: boolean; entry?: string } = {}): Promise<GatewayClient> {
    const client = new GatewayClient(gatewayEndpoint());
    if (await client.answers()) return client;
    if (!client.endpoint.own || opts.start === false) {
      throw new GatewayError(
        'GATEWAY_UNAVAILABLE',
        client.endpoint.own
          ? `no gateway answers at ${client.endpoint.socket}: start one with carapace gateway start`
          : `the system gateway does not answer at ${client.endpoint.socket}: ask the host's administrator (systemctl status carapace)`,
        503,
      );
    }
    await startGateway(client.endpoint, opts.entry ?? process.argv[1]!);
    return client;
  }

  /** Whether a gateway accepts connections on the socket. */
  answers(): Promise<boolean> {
    return new Promise((resolve) => {
      const s = connect(this.endpoint.socket);
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
  }

  async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await this.send(method, path, body);
    const text = await readAll(res);
    const parsed = text ? (JSON.parse(text) as unknown) : null;
    if ((res.statusCode ?? 500) >= 400) throw errorFrom(res.statusCode ?? 500, parsed, method, path);
    return parsed as T;
  }

  /** A text response (e.g. /metrics). */
  async text(path: string): Promise<string> {
    const res = await this.send('GET', path);
    const text = await readAll(res);
    if ((res.statusCode ?? 500) >= 400)
      throw errorFrom(res.statusCode ?? 500, text ? JSON.parse(text) : null, 'GET', path);
    return text;
  }

  /** A JSON-lines response, one parsed object at a time. */
  async *lines<T>(path: string): AsyncGenerator<T> {
    const res = await this.send('GET', path);
    if ((res.statusCode ?? 500) >= 400) {
      const text = await readAll(res);
      throw errorFrom(res.statusCode ?? 500, text ? JSON.parse(text) : null, 'GET', path);
    }
    let buffered = '';
    const chunks = (res as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
    try {
      for (;;) {
        let next: IteratorResult<Buffer>;
        try {
          next = await chunks.next();
        } catch {
          // The gateway went away mid-stream (`logs -f` while it stops or restarts): Node says only
          // "aborted". Its sandboxes run on; say so, and how to follow again.
          throw new GatewayError(
            'GATEWAY_UNAVAILABLE',
            `the gateway at ${this.endpoint.socket} went away (stopped or restarted); its sandboxes run on: run this again once it answers (carapace gateway status)`,
            503,
          );
        }
        if (next.done) return;
        buffered += next.value.toString('utf8');
        let nl: number;
        while ((nl = buffered.indexOf('\n')) >= 0) {
          const line = buffered.slice(0, nl);
          buffered = buffered.slice(nl + 1);
          if (line.trim()) yield JSON.parse(line) as T;
        }
      }
    } finally {
      res.destroy(); // a reader that stopped early (a `break`) closes the stream
    }
  }

  /** An upgraded connection (exec, connect, forward): the raw socket after the 101. */
  upgrade(path: string): Promise<Socket> {
    return new Promise((resolve, reject) => {
      const req = request({
        socketPath: this.endpoint.socket,
        path,
        method: 'GET',
        headers: { Connection: 'Upgrade', Upgrade: 'carapace-stream' },
      });
      req.on('upgrade', (_res, socket, head) => {
        if (head.length) socket.unshift(head);
        resolve(socket as Socket);
      });
      req.on('response', (res) => {
        void readAll(res).then((text) =>
          reject(errorFrom(res.statusCode ?? 500, text ? JSON.parse(text) : null, 'GET', path)),
        );
      });
      req.on('error', (err) => reject(unreachable(this.endpoint, err)));
      req.end();
    });
  }

  private send(method: string, path: string, body?: unknown): Promise<IncomingMessage> {
    return new Promise((resolve, reject) => {
      const text = body === undefined ? undefined : JSON.stringify(body);
      const req = request(
        {
          socketPath: this.endpoint.socket,
          path,
          method,
          headers:
            text === undefined
              ? {}
              : { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) },
        },
        resolve,
      );
      req.on('error', (err) => reject(unreachable(this.endpoint, err)));
      req.end(text);
    });
  }
}

function unreachable(endpoint: GatewayEndpoint, err: Error): GatewayError {
  return new GatewayError(
    'GATEWAY_UNAVAILABLE',
    `cannot reach the gateway at ${endpoint.socket}: ${(err as NodeJS.ErrnoException).code ?? err.message}`,
    503,
  );
}

function errorFrom(status: number, body: unknown, method: string, path: string): GatewayError {
  const e = (body as { error?: { code?: string; message?: string; details?: unknown } } | null)?.error;
  // The API names a bad field by its place in the request (`body.workspace`, `path.name`); the
  // user reads the flag or argument they typed (body-errors.ts).
  const message =
    e?.code === 'INVALID_INPUT' && e.message !== undefined
      ? inFlagWords(method, path, e.message, e.details)
      : e?.message;
  return new GatewayError(
    e?.code ?? 'INTERNAL',
    message ?? `the gateway answered ${status}`,
    status,
    e?.details,
  );
}

async function readAll(res: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of res as AsyncIterable<Buffer>) chunks.push(c);
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * Node flags for the gateway daemon. V8 sizes the young generation by the host's memory (128 MiB
 * on a 24 GiB machine) and touches it page by page: an idle gateway's RSS then climbs by ~100 MiB
 * over its first few hundred sandboxes without holding anything more (measured in
 * test/gateway/cycles.test.ts). 16 MiB semi-spaces keep it flat at a cost nobody sees in a
 * daemon that mostly waits. install.sh's systemd unit passes the same (NODE_OPTIONS).
 */
export const GATEWAY_NODE_FLAGS = ['--max-semi-space-size=16'];

/**
 * Starts the caller's own gateway in the background (`carapace gateway run`, detached, its output
 * in `<state>/gateway.log`) with the options `gateway start` kept (gateway-options.ts), and waits
 * until it answers.
 */
export async function startGateway(endpoint: GatewayEndpoint, entry: string): Promise<void> {
  const { readStoredOptions } = await import('./gateway-options.js');
  const options = readStoredOptions(endpoint.dirs);
  mkdirSync(endpoint.dirs.state, { recursive: true, mode: 0o700 });
  const log = openSync(join(endpoint.dirs.state, 'gateway.log'), 'a', 0o600);
  const child = spawn(process.execPath, [...GATEWAY_NODE_FLAGS, entry, 'gateway', 'run', ...options], {
    detached: true,
    stdio: ['ignore', log, log],
    env: process.env,
  });
  closeSync(log);
  let exited: number | null = null;
  child.once('exit', (code) => (exited = code ?? 1));
  child.unref();
  const client = new GatewayClient(endpoint);
  for (let i = 0; i < 500; i++) {
    if (await client.answers()) return;
    if (exited !== null) break;
    await sleep(20);
  }
  throw new GatewayError(
    'GATEWAY_UNAVAILABLE',
    `the gateway did not start (see ${join(endpoint.dirs.state, 'gateway.log')})`,
    503,
  );
}

/**
 * A policy the gateway refused as invalid, one problem a line on stderr (`file:line:col:
 * message`, the gateway's name for the text, `sentAs`, shown as the caller's file, `shownAs`),
 * exit code 2. Returns false for any other error, which is the caller's to throw.
 */
export function printedPolicyProblems(err: unknown, sentAs: string, shownAs: string | undefined): boolean {
  if (!(err instanceof GatewayError) || err.code !== 'POLICY_INVALID' || !Array.isArray(err.details))
    return false;
  for (const d of err.details as { file: string; line: number; col: number; message: string }[]) {
    const file = shownAs !== undefined && d.file === sentAs ? shownAs : d.file;
    process.stderr.write(
      `${printable(`${d.line > 0 ? `${file}:${d.line}:${d.col}` : file}: ${d.message}`)}\n`,
    );
  }
  process.exitCode = 2;
  return true;
}

/** A file the caller names (a policy, a preset), read as the caller; one line saying why not. */
export function readCallerFile(file: string, what: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why =
      code === 'ENOENT'
        ? 'no such file'
        : code === 'EISDIR'
          ? 'it is a directory'
          : code === 'EACCES'
            ? 'permission denied'
            : (err as Error).message;
    throw new GatewayError('INVALID_INPUT', `${what} ${file}: cannot read it: ${why}`, 400);
  }
}
