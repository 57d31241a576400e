/**
 * The proxy's work for a sandbox counts against that sandbox (issue 10, class 3). One proxy serves
 * two sandboxes, as a gateway's does; both are driven through their Unix sockets exactly as their
 * relays drive them. Sandbox A floods it:
 * - many busy tunnels whose replies it never reads (a firehose upstream writes without end) and many
 *   idle ones: before the fix every busy tunnel held up to a megabyte in the proxy, so a few hundred
 *   of them grew the host process by hundreds of MiB; now what the proxy holds for A stays within
 *   A's buffer budget (its reads stop, its tunnels slow), measured on the proxy's live buffers;
 * - replayed TLS handshakes against an inspected endpoint: before, every one was served at once;
 *   now A gets the handshakes its work budget pays for and the rest wait.
 * Meanwhile sandbox B's requests and handshakes are all served: only A slows.
 *
 * The flood runs in a Python child (its sockets and the firehose's buffers are not this process's),
 * so this process's live ArrayBuffers are the proxy's.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TLSSocket } from 'node:tls';
import type { SandboxProxy } from '../../src/proxy/egress-proxy.js';
import { COST, type ProxyBudgets } from '../../src/proxy/budget/sandbox-budget.js';
import { TlsAuthority } from '../../src/proxy/tls/tls-authority.js';
import {
  HttpReader,
  type Rig,
  type Upstreams,
  compile,
  connectTunnel,
  fixedCaller,
  relayConnect,
  send,
  startRig,
  startUpstreams,
  tlsOverTunnel,
} from '../proxy/harness.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const MiB = 1024 * 1024;
const BUDGET = 4 * MiB;
const BUSY = 150;
const IDLE = 300;

/**
 * The flood, in Python: a firehose server (writes 64 KiB blocks until the socket is closed) and an
 * echo server on loopback; then, on "flood SOCKET", BUSY tunnels to the firehose and IDLE to the
 * echo through the sandbox's socket (PROXY line, CONNECT, the 200 read, nothing more); "close"
 * closes them all.
 */
const FLOOD = String.raw`
import json, socket, sys, threading
def serve(handler):
    srv = socket.socket(); srv.bind(('127.0.0.1', 0)); srv.listen(1024)
    def loop():
        while True:
            c, _ = srv.accept()
            threading.Thread(target=handler, args=(c,), daemon=True).start()
    threading.Thread(target=loop, daemon=True).start()
    return srv.getsockname()[1]
block = b'f' * 65536
def firehose(c):
    try:
        while True: c.sendall(block)
    except OSError:
        c.close()
def echo(c):
    try:
        while True:
            d = c.recv(65536)
            if not d: break
            c.sendall(d)
    except OSError:
        pass
    c.close()
print(json.dumps({'fire': serve(firehose), 'echo': serve(echo)}), flush=True)
held = []
def tunnel(path, i, authority):
    s = socket.socket(socket.AF_UNIX); s.connect(path)
    s.sendall(('PROXY TCP4 127.0.0.1 127.0.0.1 %d 3128\r\nCONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n' % (20000 + i, authority, authority)).encode())
    head = b''
    while b'\r\n\r\n' not in head:
        d = s.recv(1)
        if not d: break
        head += d
    held.append(s)
    return head.startswith(b'HTTP/1.1 200')
for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == 'flood':
        path, busy, idle, fire, echo_ = cmd[1], int(cmd[2]), int(cmd[3]), cmd[4], cmd[5]
        ok = sum(tunnel(path, i, fire) for i in range(busy)) + sum(tunnel(path, busy + i, echo_) for i in range(idle))
        print(json.dumps({'flooded': ok}), flush=True)
    elif cmd[0] == 'close':
        for s in held: s.close()
        held.clear()
        print(json.dumps({'closed': True}), flush=True)
`;

class Flooder {
  private readonly lines: AsyncIterator<string>;
  constructor(readonly child: ChildProcess) {
    this.lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  }
  async next<T>(): Promise<T> {
    const r = await this.lines.next();
    if (r.done) throw new Error('the flood helper exited');
    return JSON.parse(r.value) as T;
  }
  send(line: string): void {
    this.child.stdin!.write(`${line}\n`);
  }
}

let up: Upstreams;
let flooder: Flooder;
let ports: { fire: number; echo: number };

beforeAll(async () => {
  up = await startUpstreams();
  const child = spawn('python3', ['-c', FLOOD], { stdio: ['pipe', 'pipe', 'inherit'] });
  flooder = new Flooder(child);
  ports = await flooder.next();
});
afterAll(async () => {
  flooder.child.kill('SIGKILL');
  await up.close();
});

const policy = (): string => `
version: 1
network_policies:
  flood:
    endpoints:
      - { host: fire.test, port: ${ports.fire} }
      - { host: echo.test, port: ${ports.echo} }
      - { host: api.test, port: ${up.httpsPort}, protocol: rest, access: full }
      - { host: api.test, port: ${up.httpPort}, protocol: rest, access: full }
`;

/** One proxy with two sandboxes, as a gateway's: B (the rig's, default budgets) and A with `aBudgets`. */
async function attachPair(
  aBudgets: Partial<ProxyBudgets>,
): Promise<{ rig: Rig; a: SandboxProxy; aSocket: string; aCa: string }> {
  const hosts = { 'fire.test': '127.0.0.1', 'echo.test': '127.0.0.1', 'api.test': '127.0.0.1' };
  const rig = await startRig({
    up,
    policy: policy(),
    hosts,
    allowLocal: [ports.fire, ports.echo, up.httpPort, up.httpsPort].map((p) => `127.0.0.1:${p}`),
  });
  const aSocket = join(mkdtempSync(join(tmpdir(), 'carapace-sock-')), 'proxy.sock');
  const authority = TlsAuthority.create({ sandbox: 'flooder' });
  const a = await rig.proxy.attachSandbox({
    name: 'flooder',
    heldBy: 'run',
    socketPath: aSocket,
    generation: compile(policy()),
    callerResolver: fixedCaller(),
    authority,
    budgets: aBudgets,
  });
  return { rig, a, aSocket, aCa: authority.caPem };
}

/** Waits for a state of the proxy (the test's timeout is the only clock). */
async function until(check: () => boolean): Promise<void> {
  while (!check()) await new Promise((r) => setTimeout(r, 20));
}

function liveArrayBuffers(): number {
  gc();
  gc();
  return process.memoryUsage().arrayBuffers;
}

/** B's work meanwhile: forward requests and terminated TLS tunnels, each answered 200. */
async function sandboxBWorks(rig: Rig, n: number): Promise<number[]> {
  const statuses: number[] = [];
  for (let i = 0; i < n; i++) {
    const s = await relayConnect(rig.socketPath, 41000 + i);
    const res = await send(
      new HttpReader(s),
      `GET http://api.test:${up.httpPort}/b-${i} HTTP/1.1\r\nHost: api.test:${up.httpPort}\r\nConnection: close\r\n\r\n`,
    );
    statuses.push(res.status);
    s.destroy();
    const t = await connectTunnel(rig.socketPath, `api.test:${up.httpsPort}`);
    const tls = await tlsOverTunnel(t, 'api.test', rig.authority.caPem);
    const r2 = await send(
      new HttpReader(tls),
      `GET /b-tls-${i} HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n`,
    );
    statuses.push(r2.status);
    tls.destroy();
  }
  return statuses;
}

describe('one sandbox floods the proxy', () => {
  it('a TLS handshake abandoned as soon as it completes frees its connection at once (it held it for the idle timeout)', async () => {
    const { rig, a, aSocket, aCa } = await attachPair({ maxConnections: 5 });
    try {
      for (let i = 0; i < 5; i++) {
        const t = await connectTunnel(aSocket, `api.test:${up.httpsPort}`);
        const s = await tlsOverTunnel(t, 'api.test', aCa);
        s.destroy();
        t.socket.destroy();
      }
      // Replayed handshakes would otherwise fill the sandbox's connection slots (and the proxy's
      // memory) with connections whose agent is gone: with all five held, a sixth is closed at once.
      for (;;) {
        const t = await connectTunnel(aSocket, `echo.test:${ports.echo}`).catch(() => null);
        t?.socket.destroy();
        if (t?.status === 200) break;
        await new Promise((r) => setTimeout(r, 20));
      }
      await until(() => a.openConnections === 0);
    } finally {
      await rig.close();
    }
  });

  it('busy unread and idle tunnels: what the proxy holds for it stays within its buffer budget; the other sandbox is served', async () => {
    const { rig, a, aSocket } = await attachPair({
      bufferBytes: BUDGET,
      workMicrosPerSecond: 1e9,
      workBurstMicros: 1e9,
    });
    try {
      const before = liveArrayBuffers();
      flooder.send(`flood ${aSocket} ${BUSY} ${IDLE} fire.test:${ports.fire} echo.test:${ports.echo}`);
      const { flooded } = await flooder.next<{ flooded: number }>();
      expect(flooded).toBe(BUSY + IDLE);
      // Wait until A's budget is spent (its reads stop) — or, without a budget, until the proxy has
      // buffered more than the budget allows.
      await until(
        () =>
          a.budgetStats?.throttled === true || process.memoryUsage().arrayBuffers - before > BUDGET + 8 * MiB,
      );
      // The proxy's live buffers grew by A's budget, not by a megabyte per busy tunnel.
      expect(liveArrayBuffers() - before).toBeLessThan(BUDGET + 8 * MiB);
      const stats = a.budgetStats;
      expect(stats.throttled).toBe(true);
      expect(stats.heldBytes).toBeGreaterThan(BUDGET / 2);
      // Bytes already read when the gates close still go out (a few reads at most).
      expect(stats.peakHeldBytes).toBeLessThanOrEqual(BUDGET + 512 * 1024);
      expect(a.openConnections).toBe(BUSY + IDLE);

      // B is served while A is throttled, and is not throttled itself.
      expect(await sandboxBWorks(rig, 5)).toEqual(Array(10).fill(200));
      expect(rig.sb.budgetStats.throttled).toBe(false);
      expect(a.budgetStats.throttled).toBe(true);

      flooder.send('close');
      await flooder.next();
      await until(() => a.budgetStats.heldBytes === 0 && a.openConnections === 0);
      // A works again once it lets go.
      const t = await connectTunnel(aSocket, `echo.test:${ports.echo}`);
      expect(t.status).toBe(200);
      // (A line: the proxy decides what a tunnel speaks from whole tokens, protocol-sniff.ts.)
      t.socket.write('ping\n');
      expect((await t.reader.reader.read())?.toString()).toBe('ping\n');
      t.socket.destroy();
    } finally {
      await rig.close();
    }
  }, 120_000);

  it('replayed TLS handshakes: it gets those its work budget pays for, the rest wait; the other sandbox is served', async () => {
    // Three terminated tunnels' worth (connection + two handshakes each), and nothing more for a long time.
    const each = COST.connection + 2 * COST.tlsHandshake;
    const { rig, a, aSocket, aCa } = await attachPair({ workMicrosPerSecond: 1, workBurstMicros: 3 * each });
    const done: TLSSocket[] = [];
    const sockets: Socket[] = [];
    /** A terminated tunnel: CONNECT, then a TLS handshake with the proxy (resolves when done). */
    const handshake = async (i: number): Promise<void> => {
      const s = await relayConnect(aSocket, 30000 + i);
      sockets.push(s);
      s.write(`CONNECT api.test:${up.httpsPort} HTTP/1.1\r\nHost: api.test:${up.httpsPort}\r\n\r\n`);
      const reader = new HttpReader(s);
      const r = await reader.response('CONNECT');
      expect(r.status).toBe(200);
      done.push(await tlsOverTunnel({ socket: s, reader }, 'api.test', aCa));
    };
    try {
      for (let i = 0; i < 3; i++) await handshake(i);
      // The fourth finds the bucket empty: its connection waits, and so do the eight after it.
      const rest = Array.from({ length: 9 }, (_, i) => handshake(3 + i).catch(() => undefined));
      void rest;
      // Without a budget all twelve are served at once.
      await until(() => a.budgetStats?.waiting === 9 || done.length === 12);
      expect(done).toHaveLength(3);
      expect(await sandboxBWorks(rig, 5)).toEqual(Array(10).fill(200));
      // B's ten exchanges are done; A still has exactly the three its budget paid for.
      expect(done).toHaveLength(3);
      expect(a.budgetStats.waiting).toBe(9);
    } finally {
      for (const t of done) t.destroy();
      for (const s of sockets) s.destroy();
      await rig.close();
    }
  }, 120_000);
});
