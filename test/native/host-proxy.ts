/**
 * A stand-in for the host proxy's per-sandbox Unix socket, for relay tests: it reads the PROXY
 * line each relayed connection starts with, then hands the connection to the test.
 */
import { chownSync, closeSync, constants, openSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { SANDBOX_UID, sandboxOwnedDir } from './harness.js';

const O_PATH = 0o10000000;

export interface RelayedConnection {
  /** The PROXY protocol line, without its CRLF. */
  header: string;
  socket: Socket;
  /** Bytes that arrived with the header. */
  rest: Buffer;
}

export interface HostProxy {
  dir: string;
  path: string;
  /** An O_PATH fd of the socket's directory, to pass to the sandbox as --relay-dir-fd. */
  dirFd: number;
  headers: string[];
  /** Connections accepted on the socket, whether or not a PROXY line followed. */
  connections(): number;
  close(): Promise<void>;
}

export async function startHostProxy(handle: (c: RelayedConnection) => void): Promise<HostProxy> {
  const dir = sandboxOwnedDir();
  const path = join(dir, 'proxy.sock');
  const headers: string[] = [];
  const open = new Set<Socket>();
  let connections = 0;
  const server: Server = createServer({ allowHalfOpen: true }, (socket) => {
    connections++;
    open.add(socket);
    socket.on('close', () => open.delete(socket));
    let buffered = Buffer.alloc(0);
    const onData = (d: Buffer): void => {
      buffered = Buffer.concat([buffered, d]);
      const end = buffered.indexOf('\r\n');
      if (end < 0) return;
      socket.off('data', onData);
      socket.pause();
      const header = buffered.subarray(0, end).toString();
      headers.push(header);
      handle({ header, socket, rest: buffered.subarray(end + 2) });
      socket.resume();
    };
    socket.on('data', onData);
    socket.on('error', () => {});
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  chownSync(path, SANDBOX_UID, SANDBOX_UID);
  const dirFd = openSync(dir, O_PATH | constants.O_DIRECTORY);
  return {
    dir,
    path,
    dirFd,
    headers,
    connections: () => connections,
    close: () =>
      new Promise<void>((resolve) => {
        closeSync(dirFd);
        for (const socket of open) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

/** Reads everything a connection sends until it half-closes; resolves with header + rest + that. */
export function readAll(c: RelayedConnection): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks = [c.rest];
    c.socket.on('data', (d: Buffer) => chunks.push(d));
    c.socket.on('end', () => resolve(Buffer.concat(chunks)));
    c.socket.on('error', reject);
  });
}
