/**
 * Copies bytes both ways between the agent and an upstream once nothing more is inspected: a raw
 * CONNECT tunnel after its SNI check, or a WebSocket after `101`. The tunnel is registered with its
 * sandbox so a reload can re-judge (host, port, binary) and close it (4001 Close).
 *
 * Half-close is preserved (each direction ends on its own, as TCP allows); the pair is destroyed when
 * both directions have ended or either side fails. Backpressure pauses a source once its destination
 * buffers 1 MiB, so memory per tunnel is bounded by about 2 MiB; across all of a sandbox's tunnels
 * the bytes held here count against its buffer budget, and the bytes relayed against its work
 * budget (sandbox-budget.ts): over either, the reads of both sockets stop with all its others.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import type { Duplex, Writable } from 'node:stream';
import tls from 'node:tls';
import type { ByteAccount } from '../budget/sandbox-budget.js';
import type { ClientConnection } from '../sandbox-context.js';

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
  /** The policy generation the tunnel was allowed under. */
  generation: number;
}

export function spliceRaw(conn: ClientConnection, spec: RawRelaySpec): void {
  const { client, upstream } = spec;
  const { sb, caller } = conn;
  // Raw tunnels may be idle for a long time (a WebSocket, an SSH session): no idle timeout.
  conn.socket.setTimeout(0);
  let closed = false;
  let ends = 0;
  let pump: ChildProcess | null = null;
  const account = sb.budget.account();
  let ungateClient = sb.budget.gate(client);
  let ungateUpstream = sb.budget.gate(upstream);
  const untrack = sb.track({
    host: spec.host,
    port: spec.port,
    caller,
    address: spec.address,
    inspected: spec.inspected,
    generation: spec.generation,
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
    pump?.kill('SIGKILL');
    client.destroy();
    upstream.destroy();
    ungateClient(false);
    ungateUpstream(false);
    account.close();
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
  heldWrite(upstream, spec.clientRest, account);
  heldWrite(client, spec.upstreamRest, account);

  let moved = 0;
  let promoting = false;
  const counted = (n: number): void => {
    moved += n;
    if (promoting || moved < PROMOTE_AFTER || ends > 0 || !sb.tunnelPump) return;
    if (!isPlainSocket(client) || !isPlainSocket(upstream)) return;
    const running = pumpsRunning.get(sb) ?? 0;
    if (running >= MAX_PUMPS_PER_SANDBOX) return; // more bulk tunnels stay here, slower but bounded
    promoting = true;
    pumpsRunning.set(sb, running + 1);
    // The pump reads both sockets from now on: they leave the budget with their reads stopped.
    ungateClient(false);
    ungateUpstream(false);
    const released = (): void => {
      pumpsRunning.set(sb, (pumpsRunning.get(sb) ?? 1) - 1);
    };
    const adopt = (pid: number) => sb.adoptPump(pid);
    void handToKernel(sb.tunnelPump, client, upstream, () => closed || ends > 0, adopt).then(
      (child) => {
        if (!child) {
          // The tunnel stays here: its reads are the budget's again.
          if (!closed) {
            ungateClient = sb.budget.gate(client);
            ungateUpstream = sb.budget.gate(upstream);
          }
          return released();
        }
        pump = child;
        countReports(child, (fromSandbox, toSandbox) => sb.countPumped(fromSandbox, toSandbox));
        // The pump exits when both directions have ended (0) or a side failed (1): either way, done.
        child.once('exit', () => {
          released();
          teardown();
        });
      },
      () => {
        released();
        teardown();
      },
    );
  };
  const relay = { onEnd, counted, account };
  forward(client, upstream, relay);
  forward(upstream, client, relay);
}

/** Write `buf`, held against the sandbox until it has reached the kernel. */
function heldWrite(dst: Duplex, buf: Buffer, account: ByteAccount): void {
  if (buf.length === 0) return;
  account.hold(buf.length);
  dst.write(buf, () => account.release(buf.length));
}

/** Bytes a destination may hold in its write buffer before the source is paused. */
const WRITE_BUDGET = 1024 * 1024;

/**
 * Bytes through one raw tunnel after which it is handed to native/carapace-pump. Small tunnels
 * (most HTTPS requests) stay here, where starting a process would cost more than it saves; bulk
 * ones (downloads, uploads, git clones) then move inside the kernel at close to loopback speed.
 */
const PROMOTE_AFTER = 4 * 1024 * 1024;

/** Each pump is a host process: a sandbox gets at most this many at once. */
const MAX_PUMPS_PER_SANDBOX = 32;
const pumpsRunning = new WeakMap<object, number>();

/**
 * Like `src.pipe(dst)`, but pausing the source only when the destination holds more than
 * WRITE_BUDGET: with the sockets' default 16 KiB mark every 64 KiB read would stop and restart the
 * source (two epoll changes per chunk), which halves bulk throughput.
 */
function forward(
  src: Duplex,
  dst: Duplex,
  r: { onEnd: () => void; counted: (n: number) => void; account: ByteAccount },
): void {
  const ended = (): void => {
    dst.end();
    r.onEnd();
  };
  // The source may have ended before the relay started (a server that closed at once).
  if (src.readableEnded) return ended();
  src.on('data', (chunk: Buffer) => {
    heldWrite(dst, chunk, r.account);
    if (dst.writableLength > WRITE_BUDGET) src.pause();
    r.counted(chunk.length);
  });
  dst.on('drain', () => src.resume());
  src.once('end', ended);
  src.resume();
}

function isPlainSocket(s: Duplex): s is net.Socket {
  return s instanceof net.Socket && !(s instanceof tls.TLSSocket);
}

/**
 * Hands both sockets to carapace-pump: stops reading them here, lets what this process already
 * read reach its destination, then starts the pump with the sockets as its fds 3 and 4. Returns the
 * pump, or null when the tunnel ended meanwhile or the pump could not start (the caller resumes);
 * rejects when the pump could not join the sandbox's cgroups (the caller ends the tunnel).
 *
 * Correctness rests on one rule: once the pump runs, this process never reads either socket again,
 * or bytes could reach their destination out of order. `pause()` alone does not stop a net.Socket
 * from reading (it keeps filling its buffer up to the high-water mark, and draining that buffer
 * starts reading again), so the reads are stopped at the libuv handle and the stream's `_read` is
 * disarmed while the buffered bytes are taken out.
 */
async function handToKernel(
  pumpPath: string,
  client: net.Socket,
  upstream: net.Socket,
  gone: () => boolean,
  adopt: (pid: number) => void,
): Promise<ChildProcess | null> {
  const fromClient = stopReading(client);
  const fromUpstream = stopReading(upstream);
  if (!fromClient || !fromUpstream || gone() || fromClient.ended || fromUpstream.ended) {
    fromClient?.restart();
    fromUpstream?.restart();
    return null;
  }
  // What this process read but had not delivered joins the queues it already has for each side.
  for (const chunk of fromClient.buffered) upstream.write(chunk);
  for (const chunk of fromUpstream.buffered) client.write(chunk);
  const child = await new Promise<ChildProcess | null>((resolve) => {
    let started: ChildProcess;
    try {
      // fds 3 and 4, not 0 and 1: libuv makes a child's fds 0-2 blocking, which would also make
      // these shared sockets blocking in this process.
      // fd 1: its running count of the bytes it delivered (countReports).
      started = spawn(pumpPath, [], { stdio: ['ignore', 'pipe', 'ignore', client, upstream, 'pipe'] });
    } catch {
      return resolve(null);
    }
    started.once('spawn', () => resolve(started));
    started.once('error', () => resolve(null));
  });
  if (!child) {
    fromClient.restart();
    fromUpstream.restart();
    return null;
  }
  // Into the sandbox's cgroups before it reads a byte: the pump waits for 'j' on its control pipe,
  // so its buffers' memory and its copying are the sandbox's from the first byte on. One that cannot
  // join them (they are gone: the sandbox is stopping) would run on the host's account: it is
  // killed, and the tunnel ends (the rejection reaches the caller).
  const control = (child.stdio as unknown as Writable[])[5] as Writable;
  control.on('error', () => {});
  try {
    if (child.pid !== undefined) adopt(child.pid);
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
  control.write('j');
  // The pump holds each direction's bytes until this process's queued writes on that side are out
  // (see native/carapace-pump.c); waiting for them here, before starting it, could deadlock: the
  // upstream may not read until someone reads what it sends.
  void Promise.all([
    flushed(upstream).then(() => control.write('u')),
    flushed(client).then(() => control.write('c')),
  ]).then(() => control.end());
  return child;
}

/**
 * The pump's count on its stdout ("TO_UPSTREAM TO_SANDBOX\n", running totals), handed on as what
 * moved since the line before. A line that is not two numbers is ignored (the pump writes nothing
 * else; a wrapper might).
 */
function countReports(child: ChildProcess, count: (fromSandbox: number, toSandbox: number) => void): void {
  let up = 0;
  let down = 0;
  let rest = '';
  child.stdout?.on('data', (chunk: Buffer) => {
    const lines = (rest + chunk.toString('latin1')).split('\n');
    rest = lines.pop() ?? '';
    for (const line of lines) {
      const m = /^(\d+) (\d+)$/.exec(line);
      if (!m) continue;
      const [u, d] = [Number(m[1]), Number(m[2])];
      if (u < up || d < down) continue;
      count(u - up, d - down);
      [up, down] = [u, d];
    }
  });
  child.stdout?.on('error', () => {});
}

interface Stopped {
  /** What the stream had read but not yet delivered. */
  buffered: Buffer[];
  /** The stream reached end of file while being drained. */
  ended: boolean;
  /** Reading resumes (the pump did not start). */
  restart(): void;
}

interface ReadableHandle {
  reading: boolean;
  readStop(): number;
}

/** Stops a socket's reads at the libuv handle; null when it has no handle to stop. */
function stopReading(socket: net.Socket): Stopped | null {
  const internal = socket as unknown as { _handle?: ReadableHandle | null; _read: (n: number) => void };
  const handle = internal._handle;
  if (!handle || typeof handle.readStop !== 'function') return null;
  socket.pause();
  internal._read = () => {}; // an own property: the prototype's _read would start reading again
  handle.reading = false;
  handle.readStop();
  const buffered: Buffer[] = [];
  let chunk: Buffer | null;
  while ((chunk = socket.read() as Buffer | null) !== null) buffered.push(chunk);
  return {
    buffered,
    ended: socket.readableEnded,
    restart: () => {
      delete (internal as { _read?: unknown })._read;
      socket.resume();
    },
  };
}

/** Resolves once everything queued on `s` so far has reached the kernel (or `s` is gone). */
function flushed(s: net.Socket): Promise<void> {
  if (s.writableLength === 0 || s.destroyed) return Promise.resolve();
  // 'drain' only follows a write that returned false; a write's callback always comes, in order.
  return new Promise((resolve) => {
    s.write(Buffer.alloc(0), () => resolve());
    s.once('close', () => resolve());
  });
}
