/**
 * Port forwards: a listener on the host's loopback whose connections reach a listener inside a
 * sandbox (an agent's dashboard). Each connection asks the sandbox's init to connect to the port
 * inside its network namespace (the control socket's `connect`) and the bytes flow between the two.
 *
 * Security: the listener is on 127.0.0.1, so only this host reaches it — but every local user of
 * the host can (a TCP port has no owner to check). docs/gateway.md says so; forward what may be
 * seen by the host's users.
 */
import { createServer, type Server, type Socket } from 'node:net';
import type { SandboxControl } from '../sandbox/control.js';
import { ApiError } from './api/errors.js';
import { splice } from './splice.js';
import type { Forward } from './store/sandbox-store.js';

export class ForwardSet {
  private readonly servers = new Map<number, Server>();
  /** The open connections of each forward (host port): closed with it. */
  private readonly sockets = new Map<number, Set<Socket>>();

  constructor(private readonly control: SandboxControl) {}

  /** Listens on 127.0.0.1:hostPort for the sandbox's sandboxPort. */
  async add(f: Forward): Promise<void> {
    if (this.servers.has(f.hostPort)) return;
    const open = new Set<Socket>();
    this.sockets.set(f.hostPort, open);
    // Half-open: a client that closes its sending side after its request (`nc -N`, many one-shot
    // tools) still gets the reply; its end reaches the port inside as a shutdown, as on a direct
    // connection.
    const server = createServer({ allowHalfOpen: true }, (client) => this.serve(client, f.sandboxPort, open));
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) =>
        reject(
          new ApiError(
            'FORWARD_PORT_TAKEN',
            `host port ${f.hostPort}: ${err.code === 'EADDRINUSE' ? 'already in use on this host' : (err.code ?? err.message)}`,
          ),
        ),
      );
      server.listen({ host: '127.0.0.1', port: f.hostPort, exclusive: true }, () => resolve());
    });
    this.servers.set(f.hostPort, server);
  }

  async remove(hostPort: number): Promise<void> {
    const server = this.servers.get(hostPort);
    if (!server) return;
    this.servers.delete(hostPort);
    // close() waits for every connection to end: they are ended here, not waited for.
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const s of this.sockets.get(hostPort) ?? []) s.destroy();
    this.sockets.delete(hostPort);
    await closed;
  }

  async close(): Promise<void> {
    await Promise.all([...this.servers.keys()].map((p) => this.remove(p)));
  }

  private serve(client: Socket, port: number, open: Set<Socket>): void {
    open.add(client);
    client.on('close', () => open.delete(client));
    client.on('error', () => {});
    client.pause();
    this.control.connect(port).then(
      (inside) => {
        open.add(inside);
        inside.on('close', () => open.delete(inside));
        splice(client, inside);
      },
      () => client.destroy(),
    );
  }
}
