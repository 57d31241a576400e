/**
 * Where the gateway listens, and who each listener's callers are.
 *
 * Threat: one user acting on another's sandboxes by claiming their identity. The caller is never
 * taken from a request; the kernel decides it, through file permissions on Unix sockets: connecting
 * to a Unix socket needs write permission on its file. So the system gateway (root) listens on
 *  - `<run>/gateway.sock`, owned by root, mode 0600: root only;
 *  - `<run>/users/<uid>.sock` for each member of the `carapace` (or `carapace-admin`) group, owned
 *    by that uid, mode 0600: only that user (and root) can connect, and whatever arrives there is
 *    that user.
 * The set follows the host's group file (watched). A rootless gateway has one socket, its user's.
 *
 * Each socket is bound under a temporary name in a root-only directory, given its owner and mode,
 * and only then renamed into place: there is no moment at which it exists with looser permissions.
 * A stale file at the final path is replaced only if it is a socket (never through a symlink).
 */
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  chownSync,
  lstatSync,
  mkdirSync,
  renameSync,
  rmSync,
  unlinkSync,
  watch,
  type FSWatcher,
} from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { gatewayUsers, HOST_ACCOUNTS, type GatewayUser, type HostAccounts } from '../host-groups.js';
import type { Caller } from './router.js';

export interface GatewaySocketsOptions {
  /** The gateway's run directory (`/run/carapace`, the user's runtime dir, or `$CARAPACE_HOME/run`). */
  runDir: string;
  /** True for a rootless gateway: one socket, for the user running it. */
  rootless: boolean;
  accounts?: HostAccounts;
  /** Receives every accepted connection with its caller. */
  onConnection(socket: Socket, caller: Caller): void;
  /** Told the members after every read of the group file (the dashboard drops others' tokens). */
  onMembers?(users: readonly GatewayUser[]): void;
}

export const GATEWAY_SOCKET = 'gateway.sock';

/** The socket path a user's CLI connects to on a system gateway. */
export function userSocketPath(runDir: string, uid: number): string {
  return join(runDir, 'users', `${uid}.sock`);
}

export class GatewaySockets {
  /** Each socket's server and the connections it accepted (upgraded exec streams included). */
  private readonly servers = new Map<string, { server: Server; connections: Set<Socket>; caller: Caller }>();
  private watcher: FSWatcher | null = null;
  private refreshing: Promise<void> = Promise.resolve();

  constructor(private readonly opts: GatewaySocketsOptions) {}

  get mainPath(): string {
    return join(this.opts.runDir, GATEWAY_SOCKET);
  }

  async start(): Promise<void> {
    mkdirSync(this.opts.runDir, { recursive: true, mode: 0o755 });
    const uid = process.getuid?.() ?? 0;
    if (this.opts.rootless) {
      await this.listen(this.mainPath, uid, { uid, admin: false });
      return;
    }
    await this.listen(this.mainPath, 0, { uid: 0, admin: true });
    mkdirSync(join(this.opts.runDir, 'users'), { recursive: true, mode: 0o755 });
    chmodSync(join(this.opts.runDir, 'users'), 0o755);
    await this.refresh();
    const groupFile = (this.opts.accounts ?? HOST_ACCOUNTS).groupFile;
    try {
      // The group file is replaced by rename (vigr, usermod): watch its directory.
      this.watcher = watch(join(groupFile, '..'), (_e, file) => {
        if (file === null || groupFile.endsWith(`/${file}`)) this.scheduleRefresh();
      });
      this.watcher.on('error', () => {});
    } catch {
      // no watching: membership changes take effect at the next gateway start
    }
  }

  /**
   * Makes the per-user sockets match the group file (added members get one, removed lose it). A
   * member who joined or left carapace-admin gets a new socket with the new rights: the caller is
   * fixed per socket, so the old one (and its open connections) would keep the old rights.
   */
  async refresh(): Promise<void> {
    const users = gatewayUsers(this.opts.accounts ?? HOST_ACCOUNTS);
    const wanted = new Map(users.map((u) => [userSocketPath(this.opts.runDir, u.uid), u]));
    for (const [path, entry] of this.servers) {
      if (path === this.mainPath) continue;
      if (wanted.get(path)?.admin === entry.caller.admin) continue;
      // A member no longer: their open connections (a `sandbox connect` too) end with the right.
      await closeServer(entry);
      this.servers.delete(path);
      rmSync(path, { force: true });
    }
    for (const [path, user] of wanted) {
      if (!this.servers.has(path)) await this.listen(path, user.uid, { uid: user.uid, admin: user.admin });
    }
    this.opts.onMembers?.(users);
  }

  private scheduleRefresh(): void {
    this.refreshing = this.refreshing.then(() => this.refresh()).catch(() => {});
  }

  private async listen(path: string, owner: number, caller: Caller): Promise<void> {
    const staging = join(this.opts.runDir, '.staging');
    mkdirSync(staging, { recursive: true, mode: 0o700 });
    chmodSync(staging, 0o700);
    const tmp = join(staging, `${randomBytes(6).toString('hex')}.sock`);
    const connections = new Set<Socket>();
    const server = createServer({ pauseOnConnect: false }, (socket) => {
      connections.add(socket);
      socket.once('close', () => connections.delete(socket));
      this.opts.onConnection(socket, caller);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(tmp, () => {
        server.off('error', reject);
        resolve();
      });
    });
    chmodSync(tmp, 0o600);
    if (owner !== (process.getuid?.() ?? 0)) chownSync(tmp, owner, -1);
    removeStaleSocket(path);
    renameSync(tmp, path);
    this.servers.set(path, { server, connections, caller });
  }

  async close(): Promise<void> {
    this.watcher?.close();
    await this.refreshing;
    for (const [path, entry] of this.servers) {
      await closeServer(entry);
      rmSync(path, { force: true });
    }
    this.servers.clear();
  }
}

function removeStaleSocket(path: string): void {
  try {
    const st = lstatSync(path);
    if (!st.isSocket()) throw new Error(`${path} exists and is not a socket: remove it`);
    unlinkSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

/**
 * Stops accepting and ends what was accepted: a server's close waits for every connection it
 * accepted, and an exec stream or an idle keep-alive client can stay open for as long as its client
 * likes (a gateway stop or a membership change would wait on them forever).
 */
function closeServer({ server, connections }: { server: Server; connections: Set<Socket> }): Promise<void> {
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  for (const socket of connections) socket.destroy();
  return closed;
}
