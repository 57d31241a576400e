/**
 * Copies bytes both ways between the agent and an upstream once nothing more is inspected: a raw
 * CONNECT tunnel after its SNI check, or a WebSocket after `101`. The tunnel is registered with its
 * sandbox so a reload can re-judge (host, port, binary) and close it (4001 Close).
 *
 * Half-close is preserved (each direction ends on its own, as TCP allows); the pair is destroyed when
 * both directions have ended or either side fails. Backpressure pauses a source once its destination
 * buffers 1 MiB, so memory per tunnel is bounded by about 2 MiB.
 */
import type { Duplex } from 'node:stream';
import type { ClientConnection } from './sandbox-context.js';

export interface RawRelaySpec {
  client: Duplex;
  upstream: Duplex;
  /** Bytes already read from the client that belong to the upstream (e.g. a peeked ClientHello). */
  clientRest: Buffer;
  /** Bytes already read from the upstream that belong to the client. */
  upstreamRest: Buffer;
  host: string;
  port: number;
  address: string;
  /** True when the connection was allowed as an inspected endpoint (a WebSocket on protocol: websocket). */
  inspected: boolean;
}

export function spliceRaw(conn: ClientConnection, spec: RawRelaySpec): void {
  const { client, upstream } = spec;
  const { sb, caller } = conn;
  // Raw tunnels may be idle for a long time (a WebSocket, an SSH session): no idle timeout.
  conn.socket.setTimeout(0);
  let closed = false;
  let ends = 0;
  const untrack = sb.track({
    host: spec.host,
    port: spec.port,
    caller,
    address: spec.address,
    inspected: spec.inspected,
    close: (reason: string) => {
      if (closed) return;
      const pinned = sb.current();
      sb.audit.closed({ host: spec.host, port: spec.port, caller, reason, generation: pinned.generation });
      teardown();
    },
  });
  const teardown = (): void => {
    if (closed) return;
    closed = true;
    untrack();
    client.destroy();
    upstream.destroy();
  };
  const onEnd = (): void => {
    ends++;
    if (ends === 2) teardown();
  };
  // `on`, not `once`: a destroyed socket can report more than one error, and an 'error' without a
  // listener would take the whole proxy down.
  client.on('error', teardown);
  upstream.on('error', teardown);
  client.once('close', teardown);
  upstream.once('close', teardown);
  if (client.destroyed || upstream.destroyed) return teardown();
  if (spec.clientRest.length > 0) upstream.write(spec.clientRest);
  if (spec.upstreamRest.length > 0) client.write(spec.upstreamRest);
  forward(client, upstream, onEnd);
  forward(upstream, client, onEnd);
}

/** Bytes a destination may hold in its write buffer before the source is paused. */
const WRITE_BUDGET = 1024 * 1024;

/**
 * Like `src.pipe(dst)`, but pausing the source only when the destination holds more than
 * WRITE_BUDGET: with the sockets' default 16 KiB mark every 64 KiB read would stop and restart the
 * source (two epoll changes per chunk), which halves bulk throughput.
 */
function forward(src: Duplex, dst: Duplex, onEnd: () => void): void {
  const ended = (): void => {
    dst.end();
    onEnd();
  };
  // The source may have ended before the relay started (a server that closed at once).
  if (src.readableEnded) return ended();
  src.on('data', (chunk: Buffer) => {
    dst.write(chunk);
    if (dst.writableLength > WRITE_BUDGET) src.pause();
  });
  dst.on('drain', () => src.resume());
  src.once('end', ended);
  src.resume();
}
