/**
 * One connection on a sandbox's Unix socket: the relay header, the caller's identity, the first request
 * head, then CONNECT (tunnel.ts) or forward requests (l7-session.ts).
 *
 * Threat: anything that is not exactly what the relay sends. Assumptions: only the relay can connect
 * (the socket's directory is reachable only through the init's descriptor), so a bad header means a
 * bug or a breach: the connection is closed without an answer and a finding is recorded. The caller's
 * identity is resolved while the head is being read (both are needed for the first decision); an
 * identity that cannot be established refuses the request with a 403 naming the reason.
 */
import type net from 'node:net';
import type { CallerResult } from '../identity/caller-identity.js';
import { parseAuthority } from '../net/host-name.js';
import { HttpHeadError } from '../http/http-fields.js';
import { MAX_HEAD_BYTES, type RequestHead, parseRequestHead } from '../http/http-head.js';
import { L7Session } from './l7-session.js';
import {
  MAX_PROXY_LINE,
  ProxyHeaderError,
  findProxyHeaderEnd,
  parseProxyHeader,
} from '../identity/proxy-protocol.js';
import { badRequest, forbidden } from './responses.js';
import { COST } from '../budget/sandbox-budget.js';
import { type ClientConnection, type SandboxContext, UNKNOWN_BINARY } from '../sandbox-context.js';
import { StreamClosedError, StreamReader } from '../http/stream-reader.js';
import { handleConnect } from './tunnel.js';

/** Idle time after which a client connection that is not a raw tunnel is closed. */
export const CLIENT_IDLE_MS = 120_000;

async function readProxyLine(reader: StreamReader): Promise<Buffer | null> {
  let buf = Buffer.alloc(0);
  for (;;) {
    const chunk = await reader.read();
    if (chunk === null) return null;
    buf = Buffer.concat([buf, chunk]);
    const end = findProxyHeaderEnd(buf.subarray(0, Math.max(MAX_PROXY_LINE, 6)));
    if (end >= 0) {
      reader.unshift(buf.subarray(end));
      return buf.subarray(0, end);
    }
  }
}

/** Host and port a request is for, for messages only (never the path or query). */
function destinationOf(head: RequestHead): { host: string; port: number } {
  try {
    if (head.method === 'CONNECT') return parseAuthority(head.target);
    const m = /^http:\/\/([^/?#]*)/i.exec(head.target);
    if (m) return parseAuthority(m[1] as string, 80);
  } catch {
    // fall through
  }
  return { host: '(unknown)', port: 0 };
}

export async function handleConnection(sb: SandboxContext, socket: net.Socket): Promise<void> {
  socket.setTimeout(CLIENT_IDLE_MS, () => socket.destroy());
  socket.on('error', () => socket.destroy());
  const reader = new StreamReader(socket);
  const generation = sb.current().generation;
  try {
    let header;
    try {
      const line = await readProxyLine(reader);
      if (line === null) return void socket.destroy();
      header = parseProxyHeader(line);
    } catch (err) {
      if (!(err instanceof ProxyHeaderError)) throw err;
      sb.audit.finding({
        kind: 'bad-relay-header',
        title: `bad relay header: ${err.reason}`,
        caller: {},
        reason: err.reason,
      });
      return void socket.destroy();
    }
    // The caller lookup and everything after it is work done for this sandbox: it waits for its
    // tokens (a flood of connections slows its own set-up, nobody else's).
    const turn = sb.budget.spend(COST.connection);
    if (turn) await turn;
    if (socket.destroyed) return;
    const identity: Promise<CallerResult> = sb.callerResolver
      .resolve({
        family: header.family,
        srcAddress: header.srcAddress,
        srcPort: header.srcPort,
        dstAddress: header.dstAddress,
        dstPort: header.dstPort,
        socketInode: header.socketInode,
      })
      .catch((err: unknown) => {
        sb.internalError(err);
        return { ok: false, reason: 'the calling process could not be identified' };
      });
    let headBytes: Buffer | null;
    let head;
    try {
      // Reading the head already refuses some of it (a bare CR or LF, a head over the limit): those
      // get the same answer and audit event as a head the parser refuses.
      headBytes = await reader.readHead(MAX_HEAD_BYTES);
      if (headBytes === null) return void socket.destroy();
      head = parseRequestHead(headBytes, 'proxy');
    } catch (err) {
      if (!(err instanceof HttpHeadError)) throw err;
      const who = await identity;
      sb.audit.connect({
        disposition: 'blocked',
        host: '(unknown)',
        port: 0,
        caller: who.ok
          ? { pid: who.caller.pid, binary: who.caller.binary }
          : { pid: who.pid, binary: who.binary },
        reason: `malformed request: ${err.reason}`,
        generation,
        srcPort: header.srcPort,
      });
      return void socket.end(badRequest(err.reason, err.status));
    }
    const who = await identity;
    if (!who.ok) {
      const { host, port } = destinationOf(head);
      const caller = { pid: who.pid, binary: who.binary };
      if (who.finding)
        sb.audit.finding({ kind: who.finding, title: who.reason, caller, host, port, reason: who.reason });
      sb.audit.connect({
        disposition: 'blocked',
        host,
        port,
        caller,
        reason: who.reason,
        generation,
        srcPort: header.srcPort,
      });
      return void socket.end(
        forbidden(
          {
            host,
            port,
            binary: who.binary ?? UNKNOWN_BINARY,
            reason: who.reason,
            hint: { kind: 'identity' },
          },
          sb.heldBy,
        ),
      );
    }
    const conn: ClientConnection = { sb, socket, reader, srcPort: header.srcPort, caller: who.caller };
    if (head.method === 'CONNECT') return await handleConnect(conn, head);
    // Forward requests; a CONNECT later on the same connection is handed to the tunnel code.
    const end = await new L7Session(conn, socket, reader, { kind: 'forward' }).run(headBytes);
    if (end.kind === 'connect') await handleConnect(conn, end.head);
  } catch (err) {
    // A peer that vanished or sent a bad frame ends only its own connection; anything else is a bug
    // worth reporting, but still must not take the proxy (and every other sandbox) down.
    if (!(err instanceof StreamClosedError) && !(err instanceof HttpHeadError)) sb.internalError(err);
    socket.destroy();
  }
}
