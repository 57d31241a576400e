/**
 * The two other parties of the proxy bench, in worker threads with their own event loops: `upstream`
 * serves a TCP echo, a TCP sink and an HTTPS server on loopback; `client` runs the measurements,
 * either through the sandbox socket (as the relay would) or directly to the upstream; `both` does
 * both in one thread, for machines where three busy threads would not each get a core.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { parentPort, workerData } from 'node:worker_threads';
import { TlsAuthority } from '../src/proxy/tls/tls-authority.js';

export interface UpstreamInfo {
  echoPort: number;
  sinkPort: number;
  httpsPort: number;
  caFile: string;
  caPem: string;
}

export type ClientTask =
  | ({ cmd: 'latency'; samples: number } & Route)
  | ({ cmd: 'throughput'; bytes: number } & Route)
  | {
      cmd: 'l7';
      socketPath: string | null;
      host: string;
      port: number;
      ca: string;
      requests: number;
      connections: number;
    };

function listen(server: net.Server): Promise<number> {
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port)),
  );
}

async function upstream(): Promise<UpstreamInfo> {
  const echo = net.createServer((s) => {
    s.on('error', () => undefined);
    s.pipe(s);
  });
  // The sink counts bytes and answers one byte once it has `n` (sent as an 8-byte header first).
  const sink = net.createServer((s) => {
    s.on('error', () => undefined);
    let want = -1;
    let got = 0;
    let head = Buffer.alloc(0);
    s.on('data', (d: Buffer) => {
      if (want < 0) {
        head = Buffer.concat([head, d]);
        if (head.length < 8) return;
        want = Number(head.readBigUInt64BE(0));
        got = head.length - 8;
      } else {
        got += d.length;
      }
      if (got >= want) s.end('!');
    });
  });
  const ca = TlsAuthority.create({ sandbox: 'bench-upstream-ca' });
  const dir = mkdtempSync(join(tmpdir(), 'carapace-bench-'));
  const caFile = join(dir, 'ca.pem');
  writeFileSync(caFile, ca.caPem);
  const body = Buffer.from('{"ok":true}');
  const web = https.createServer(
    { SNICallback: (n, cb) => cb(null, ca.contextFor({ host: n, kind: 'dns' })) },
    (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': body.length });
      res.end(body);
    },
  );
  web.keepAliveTimeout = 60_000;
  const info: UpstreamInfo = {
    echoPort: await listen(echo),
    sinkPort: await listen(sink),
    httpsPort: await listen(web),
    caFile,
    caPem: ca.caPem,
  };
  return info;
}

/**
 * How a client reaches the upstream: directly over TCP (`socketPath` null, no `proxyPort`), through
 * a Carapace sandbox socket (`socketPath`: the relay's PROXY line, then CONNECT), or through an HTTP
 * proxy listening on loopback TCP (`proxyPort`: CONNECT; srt's proxy).
 */
export interface Route {
  socketPath: string | null;
  proxyPort?: number | undefined;
  host: string;
  port: number;
}

/** A stream to the upstream along `task`'s route. */
async function open(task: Route): Promise<net.Socket> {
  const connect = `CONNECT ${task.host}:${task.port} HTTP/1.1\r\nHost: ${task.host}:${task.port}\r\n\r\n`;
  let s: net.Socket;
  if (task.socketPath !== null) {
    s = net.connect(task.socketPath);
    s.write(`PROXY TCP4 127.0.0.1 127.0.0.1 40000 3128\r\n${connect}`);
  } else if (task.proxyPort !== undefined) {
    s = net.connect({ host: '127.0.0.1', port: task.proxyPort });
    s.setNoDelay(true);
    s.write(connect);
  } else {
    s = net.connect({ host: '127.0.0.1', port: task.port });
    s.setNoDelay(true);
    await new Promise<void>((r) => s.once('connect', r));
    return s;
  }
  let buf = Buffer.alloc(0);
  await new Promise<void>((resolve, reject) => {
    const onData = (d: Buffer): void => {
      buf = Buffer.concat([buf, d]);
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      s.off('data', onData);
      if (!buf.subarray(0, 12).toString().includes(' 200'))
        return reject(new Error(`CONNECT refused: ${buf.toString()}`));
      s.pause();
      if (end + 4 < buf.length) s.unshift(buf.subarray(end + 4));
      resolve();
    };
    s.on('data', onData);
    s.once('error', reject);
  });
  return s;
}

async function latency(task: Extract<ClientTask, { cmd: 'latency' }>): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < task.samples; i++) {
    const t0 = performance.now();
    const s = await open(task);
    await new Promise<void>((resolve) => {
      s.once('data', () => resolve());
      s.resume();
      // A line, not a bare byte: the proxy decides what a raw tunnel speaks on whole tokens.
      s.write('x\n');
    });
    out.push(performance.now() - t0);
    s.destroy();
  }
  return out;
}

async function throughput(task: Extract<ClientTask, { cmd: 'throughput' }>): Promise<number> {
  const s = await open(task);
  const header = Buffer.alloc(8);
  header.writeBigUInt64BE(BigInt(task.bytes));
  const block = Buffer.alloc(256 * 1024, 0x5a);
  const done = new Promise<void>((resolve) => {
    s.once('data', () => resolve());
    s.resume();
  });
  const t0 = performance.now();
  s.write(header);
  let left = task.bytes;
  while (left > 0) {
    const n = Math.min(left, block.length);
    left -= n;
    if (!s.write(n === block.length ? block : block.subarray(0, n)))
      await new Promise((r) => s.once('drain', r));
  }
  await done;
  const ms = performance.now() - t0;
  s.destroy();
  return ms;
}

async function l7(task: Extract<ClientTask, { cmd: 'l7' }>): Promise<number> {
  const request = Buffer.from(`GET /item HTTP/1.1\r\nHost: ${task.host}:${task.port}\r\n\r\n`);
  const one = async (count: number): Promise<void> => {
    const raw = await open(task);
    const s = tls.connect({ socket: raw, servername: task.host, ca: task.ca, ALPNProtocols: ['http/1.1'] });
    await new Promise<void>((r, j) => {
      s.once('secureConnect', r);
      s.once('error', j);
    });
    let buf = Buffer.alloc(0);
    let waiting: (() => void) | null = null;
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const m = /content-length: (\d+)/i.exec(buf.subarray(0, end).toString('latin1'));
      const total = end + 4 + Number(m?.[1] ?? 0);
      if (buf.length < total) return;
      buf = buf.subarray(total);
      const w = waiting;
      waiting = null;
      w?.();
    });
    for (let i = 0; i < count; i++) {
      await new Promise<void>((r) => {
        waiting = r;
        s.write(request);
      });
    }
    s.destroy();
  };
  const per = Math.ceil(task.requests / task.connections);
  const t0 = performance.now();
  await Promise.all(Array.from({ length: task.connections }, () => one(per)));
  return (per * task.connections) / ((performance.now() - t0) / 1000);
}

/**
 * `upstream`: serve and report the ports; `client`: run measurement tasks; `both`: serve and measure
 * in one thread (machines with fewer than three cores), reporting the ports.
 */
async function main(role: PeerRole): Promise<void> {
  const info = role === 'client' ? null : await upstream();
  if (role === 'upstream') {
    parentPort?.postMessage(info);
    return;
  }
  parentPort?.on('message', (task: ClientTask) => {
    const run =
      task.cmd === 'latency' ? latency(task) : task.cmd === 'throughput' ? throughput(task) : l7(task);
    run.then(
      (result) => parentPort?.postMessage({ ok: true, result }),
      (err: unknown) => parentPort?.postMessage({ ok: false, error: String(err) }),
    );
  });
  parentPort?.postMessage(info ?? { ready: true });
}

export type PeerRole = 'upstream' | 'client' | 'both';
const role = (workerData as { role?: PeerRole } | null)?.role;
if (parentPort && (role === 'upstream' || role === 'client' || role === 'both')) void main(role);
