/**
 * Port forwards: a listener on the host's loopback whose connections reach a listener inside a
 * sandbox (an agent's dashboard). Each connection asks the sandbox's init to connect to the port
 * inside its network namespace (the control socket's `connect`) and the bytes flow between the two.
 *
 * A forward says whether it listens. A host port someone else holds is refused where a caller asks
 * for it (`add`: create, `sandbox forward`), and nothing is kept; a stored forward that cannot be
 * bound when its sandbox starts (after a gateway restart, a reboot, `sandbox start`) is `kept`:
 * the sandbox runs, the forward shows as not listening with the reason, and the binding is tried
 * again every `retryMs` until it succeeds or the forward goes.
 *
 * Security: the listener is on 127.0.0.1, so only this host reaches it — but every local user of
 * the host can (a TCP port has no owner to check). docs/gateway.md says so; forward what may be
 * seen by the host's users.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { lifecycle, type OcsfEvent } from '../../audit/index.js';
import type { SandboxControl } from '../../sandbox/control/control.js';
import { splice } from './splice.js';
import type { Forward } from '../store/sandbox-store.js';

/** How often a kept forward that could not be bound is tried again (docs/gateway.md). */
export const FORWARD_RETRY_MS = 5_000;

/** Whether a forward of a running sandbox listens, and why not. */
export interface ForwardState {
  listening: boolean;
  /** Why it does not listen (the bind's error); null while it listens. */
  reason: string | null;
}

/** A kept forward stopped or started listening, as a 6002 event for the sandbox's audit trail. */
export function forwardEvent(id: string, name: string, f: Forward, state: ForwardState): OcsfEvent {
  const what = `forward 127.0.0.1:${f.hostPort} → ${f.sandboxPort} of ${name}`;
  return lifecycle({
    sandbox: id,
    activity: 'update',
    message: state.listening
      ? `${what} listens now`
      : `${what} is not listening: host port ${f.hostPort} is ${state.reason}; tried again every ${Math.round(FORWARD_RETRY_MS / 1000)}s`,
    details: {
      forward: { host_port: f.hostPort, sandbox_port: f.sandboxPort },
      listening: state.listening,
      ...(state.reason !== null ? { reason: state.reason } : {}),
    },
  });
}

/** A host port the gateway could not listen on: someone else holds it, or it is not the gateway's to bind. */
export class ForwardBindError extends Error {
  override name = 'ForwardBindError';
  constructor(
    readonly code: 'FORWARD_PORT_TAKEN' | 'FORWARD_PORT_UNAVAILABLE',
    readonly hostPort: number,
    /** What is wrong, without the port: "in use by another program on this host". */
    readonly why: string,
  ) {
    super(`host port ${hostPort} is ${why}`);
  }
}

/** Listens on 127.0.0.1:port, or throws ForwardBindError. */
function listen(port: number, onConnection?: (client: Socket) => void): Promise<Server> {
  // Half-open: a client that closes its sending side after its request (`nc -N`, many one-shot
  // tools) still gets the reply; its end reaches the port inside as a shutdown, as on a direct
  // connection.
  const server = createServer({ allowHalfOpen: true }, onConnection);
  return new Promise((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(
        err.code === 'EADDRINUSE'
          ? new ForwardBindError('FORWARD_PORT_TAKEN', port, 'in use by another program on this host')
          : new ForwardBindError(
              'FORWARD_PORT_UNAVAILABLE',
              port,
              `not one the gateway can listen on (${err.code ?? err.message})`,
            ),
      ),
    );
    server.listen({ host: '127.0.0.1', port, exclusive: true }, () => resolve(server));
  });
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

/** Whether 127.0.0.1:port can be listened on now (a stopped sandbox's forward); throws ForwardBindError. */
export async function probeHostPort(port: number): Promise<void> {
  await closeServer(await listen(port));
}

/**
 * A host port near `port` that can be listened on now and is none of `taken`, for a hint; null
 * when none of the next 20 can.
 */
export async function freeHostPortNear(port: number, taken: ReadonlySet<number>): Promise<number | null> {
  for (let p = port + 1; p <= Math.min(65535, port + 20); p++) {
    if (taken.has(p)) continue;
    try {
      await probeHostPort(p);
      return p;
    } catch {
      // held too: the next one
    }
  }
  return null;
}

export class ForwardSet {
  private readonly servers = new Map<number, Server>();
  /** The open connections of each forward (host port): closed with it. */
  private readonly sockets = new Map<number, Set<Socket>>();
  /** Kept forwards that do not listen (why), tried again every retryMs. */
  private readonly unbound = new Map<number, { f: Forward; reason: string }>();
  private retry: NodeJS.Timeout | null = null;
  private control: SandboxControl | null = null;
  private onChange: (f: Forward, state: ForwardState) => void = () => {};
  private closed = false;

  constructor(private readonly retryMs = FORWARD_RETRY_MS) {}

  /**
   * The sandbox the forwards reach, and who hears when a kept forward stops or starts listening.
   * Until then (ports reserved for a sandbox being created) a connection is refused, as it would
   * be by a sandbox whose agent does not listen yet.
   */
  attach(control: SandboxControl, onChange: (f: Forward, state: ForwardState) => void): void {
    this.control = control;
    this.onChange = onChange;
  }

  /** Listens on 127.0.0.1:hostPort for the sandbox's sandboxPort, or throws ForwardBindError (nothing kept). */
  async add(f: Forward): Promise<void> {
    if (this.closed) throw new Error('the forwards of this sandbox are closed');
    if (this.servers.has(f.hostPort)) return;
    const open = new Set<Socket>();
    const server = await listen(f.hostPort, (client) => this.serve(client, f.sandboxPort, open));
    if (this.closed || this.servers.has(f.hostPort)) {
      await closeServer(server);
      return;
    }
    this.servers.set(f.hostPort, server);
    this.sockets.set(f.hostPort, open);
  }

  /**
   * Listens if it can; if not, the forward is kept not listening (with the reason, told to
   * onChange) and tried again every retryMs until it listens or is removed. Never throws.
   */
  async keep(f: Forward): Promise<void> {
    if (this.closed || this.servers.has(f.hostPort) || this.unbound.has(f.hostPort)) return;
    try {
      await this.add(f);
    } catch (err) {
      if (this.closed || this.servers.has(f.hostPort)) return;
      const reason = err instanceof ForwardBindError ? err.why : (err as Error).message;
      this.unbound.set(f.hostPort, { f, reason });
      this.onChange(f, { listening: false, reason });
      this.retry ??= setInterval(() => void this.retryUnbound(), this.retryMs).unref();
    }
  }

  private retrying = false;

  private async retryUnbound(): Promise<void> {
    if (this.retrying) return;
    this.retrying = true;
    try {
      for (const [port, { f }] of [...this.unbound]) {
        try {
          await this.add(f);
        } catch {
          continue; // still held: said once already, tried again at the next tick
        }
        if (this.unbound.get(port)?.f !== f) continue; // removed meanwhile (remove closed it)
        this.unbound.delete(port);
        this.onChange(f, { listening: true, reason: null });
      }
    } finally {
      this.retrying = false;
      if (this.unbound.size === 0) this.stopRetry();
    }
  }

  private stopRetry(): void {
    if (this.retry) clearInterval(this.retry);
    this.retry = null;
  }

  /** A forward's state, or null when this set does not hold it. */
  state(hostPort: number): ForwardState | null {
    if (this.servers.has(hostPort)) return { listening: true, reason: null };
    const u = this.unbound.get(hostPort);
    return u ? { listening: false, reason: u.reason } : null;
  }

  async remove(hostPort: number): Promise<void> {
    if (this.unbound.delete(hostPort) && this.unbound.size === 0) this.stopRetry();
    const server = this.servers.get(hostPort);
    if (!server) return;
    this.servers.delete(hostPort);
    // close() waits for every connection to end: they are ended here, not waited for.
    const closed = closeServer(server);
    for (const s of this.sockets.get(hostPort) ?? []) s.destroy();
    this.sockets.delete(hostPort);
    await closed;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.unbound.clear();
    this.stopRetry();
    await Promise.all([...this.servers.keys()].map((p) => this.remove(p)));
  }

  private serve(client: Socket, port: number, open: Set<Socket>): void {
    open.add(client);
    client.on('close', () => open.delete(client));
    client.on('error', () => {});
    const control = this.control;
    if (!control) {
      client.destroy();
      return;
    }
    client.pause();
    control.connect(port).then(
      (inside) => {
        open.add(inside);
        inside.on('close', () => open.delete(inside));
        splice(client, inside);
      },
      () => client.destroy(),
    );
  }
}
