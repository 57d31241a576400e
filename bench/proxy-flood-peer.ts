/**
 * The other parties of the flood bench (bench/proxy-flood.ts), each a child process of its own so
 * that the bench process is the proxy alone (its RSS and CPU are the proxy's):
 * - `upstream`: a TCP echo, a firehose (writes 64 KiB blocks to every connection until it closes)
 *   and an HTTPS server, on loopback;
 * - `flood`: sandbox A. Opens many tunnels to the firehose through A's socket (PROXY line, CONNECT,
 *   the answer read, then its reads stopped for good: unread tunnels), and runs loops that replay
 *   TLS handshakes against an inspected endpoint (CONNECT, handshake, close, again);
 * - `client`: sandbox B. Times tunnel set-up (connect → CONNECT → one byte echoed) through B's socket.
 * Tasks come as IPC messages; each gets one reply.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { readGate } from '../src/proxy/budget/read-gate.js';
import { TlsAuthority } from '../src/proxy/tls/tls-authority.js';

export interface FloodUpstreams {
  echoPort: number;
  firePort: number;
  httpsPort: number;
  caFile: string;
}

export type FloodTask =
  | { cmd: 'latency'; socketPath: string; host: string; port: number; samples: number }
  | {
      cmd: 'flood';
      socketPath: string;
      tunnels: number;
      /** Unread tunnels kept at most (leaves the handshake loops room); the rest are closed again. */
      keep: number;
      fire: string;
      handshakeLoops: number;
      https: string;
      ca: string;
    }
  | { cmd: 'stats' }
  | { cmd: 'stop' };

export interface FloodStats {
  /** Tunnels kept unread; opened and closed again (past `keep`); closed by the proxy at once. */
  opened: number;
  closed: number;
  refused: number;
  /** TLS handshakes completed through the proxy since the flood began. */
  handshakes: number;
}

const listen = (server: net.Server): Promise<number> =>
  new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port)),
  );

async function upstreams(): Promise<FloodUpstreams> {
  const echo = net.createServer((s) => {
    s.on('error', () => undefined);
    s.pipe(s);
  });
  const block = Buffer.alloc(64 * 1024, 0x66);
  const fire = net.createServer((s) => {
    s.on('error', () => undefined);
    const pump = (): void => {
      while (!s.destroyed && s.write(block));
      if (!s.destroyed) s.once('drain', pump);
    };
    pump();
  });
  const ca = TlsAuthority.create({ sandbox: 'flood-upstream-ca' });
  const caFile = join(mkdtempSync(join(tmpdir(), 'carapace-flood-')), 'ca.pem');
  writeFileSync(caFile, ca.caPem);
  const web = https.createServer(
    { SNICallback: (n, cb) => cb(null, ca.contextFor({ host: n, kind: 'dns' })) },
    (_req, res) => res.end('ok'),
  );
  return { echoPort: await listen(echo), firePort: await listen(fire), httpsPort: await listen(web), caFile };
}

/** A tunnel through a sandbox's socket; resolves with the socket once the proxy answered 200. */
function tunnel(socketPath: string, authority: string, srcPort: number): Promise<net.Socket | null> {
  return new Promise((resolve) => {
    const s = net.connect(socketPath);
    s.on('error', () => resolve(null));
    s.write(
      `PROXY TCP4 127.0.0.1 127.0.0.1 ${srcPort} 3128\r\nCONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`,
    );
    let head = Buffer.alloc(0);
    const onData = (d: Buffer): void => {
      head = Buffer.concat([head, d]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      s.off('data', onData);
      s.pause();
      if (end + 4 < head.length) s.unshift(head.subarray(end + 4));
      resolve(head.subarray(0, 12).toString().includes(' 200') ? s : (s.destroy(), null));
    };
    s.on('data', onData);
    s.once('close', () => resolve(null));
  });
}

async function latency(t: Extract<FloodTask, { cmd: 'latency' }>): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < t.samples; i++) {
    const t0 = performance.now();
    const s = await tunnel(t.socketPath, `${t.host}:${t.port}`, 40000 + (i % 20000));
    if (!s) throw new Error('the quiet sandbox was refused a tunnel');
    await new Promise<void>((resolve) => {
      s.once('data', () => resolve());
      s.resume();
      s.write('x\n');
    });
    out.push(performance.now() - t0);
    s.destroy();
  }
  return out;
}

const flood = {
  held: [] as net.Socket[],
  stats: { opened: 0, closed: 0, refused: 0, handshakes: 0 },
  running: false,
};

async function startFlood(t: Extract<FloodTask, { cmd: 'flood' }>): Promise<FloodStats> {
  flood.running = true;
  // Replayed handshakes, as fast as the proxy lets them through; started first, so that they hold
  // connection slots of their own once the unread tunnels have taken the rest.
  const host = t.https.split(':')[0] as string;
  for (let l = 0; l < t.handshakeLoops; l++) {
    void (async () => {
      for (let n = 0; flood.running; n++) {
        const raw = await tunnel(t.socketPath, t.https, 30000 + l * 1000 + (n % 1000));
        if (!raw) continue;
        const s = tls.connect({ socket: raw, servername: host, ca: t.ca });
        const ok = await new Promise<boolean>((r) => {
          s.once('secureConnect', () => r(true));
          s.once('error', () => r(false));
        });
        if (ok) flood.stats.handshakes++;
        s.destroy();
        raw.destroy();
      }
    })();
  }
  // Unread tunnels, opened in batches so the socket's accept queue never overflows.
  for (let i = 0; i < t.tunnels; i += 50) {
    const batch = await Promise.all(
      Array.from({ length: Math.min(50, t.tunnels - i) }, (_, j) =>
        tunnel(t.socketPath, t.fire, 1024 + i + j),
      ),
    );
    for (const s of batch) {
      if (s === null) {
        flood.stats.refused++;
        continue;
      }
      if (flood.stats.opened >= t.keep) {
        // Past what is kept: opened, then closed (a flood of tunnels, not of held ones).
        flood.stats.closed++;
        s.destroy();
        continue;
      }
      flood.stats.opened++;
      // Never read again: not even up to the high-water mark.
      readGate(s).close();
      flood.held.push(s);
    }
  }
  return { ...flood.stats };
}

function stopFlood(): FloodStats {
  flood.running = false;
  for (const s of flood.held.splice(0)) s.destroy();
  return { ...flood.stats };
}

async function main(role: string): Promise<void> {
  if (role === 'upstream') {
    process.send?.(await upstreams());
    return;
  }
  process.on('message', (task: FloodTask) => {
    const run: Promise<unknown> =
      task.cmd === 'latency'
        ? latency(task)
        : task.cmd === 'flood'
          ? startFlood(task)
          : Promise.resolve(task.cmd === 'stop' ? stopFlood() : { ...flood.stats });
    run.then(
      (result) => process.send?.({ ok: true, result }),
      (err: unknown) => process.send?.({ ok: false, error: String(err) }),
    );
  });
  process.send?.({ ready: true });
}

const role = process.argv[2];
if (process.send && role !== undefined) void main(role);
