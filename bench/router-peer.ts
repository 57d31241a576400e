/**
 * The other parties of the router bench, in a worker thread with its own event loop: the fake
 * OpenAI-compatible provider (test/helpers/fake-providers.ts, over HTTPS like a cloud provider) and
 * the client, which measures either directly against the provider or through the sandbox's proxy
 * socket to https://inference.local (CONNECT, TLS with the sandbox's CA), with the same code and
 * kept-alive connections both ways.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { parentPort } from 'node:worker_threads';
import { TlsAuthority } from '../src/proxy/tls/tls-authority.js';
import { FakeProvider } from '../test/helpers/fake-providers.js';

export interface ProviderInfo {
  url: string;
  port: number;
  caFile: string;
  caPem: string;
}

/** Where a client's requests go: the provider itself, or inference.local through a sandbox socket. */
export type Target =
  { kind: 'direct'; port: number; ca: string } | { kind: 'routed'; socketPath: string; ca: string };

export type PeerTask =
  | { cmd: 'ttft'; target: Target; samples: number }
  | {
      cmd: 'stream';
      target: Target;
      deltas: number;
      rounds: number;
      /** Pace the provider: `burst` events every `delayMs` (a model's pace); none: as fast as it can. */
      pace?: { burst: number; delayMs: number } | undefined;
    };

/** The first text delta the fake sends (`Hell` of `Hello …`, four characters per delta). */
const FIRST_TEXT = Buffer.from('"content":"Hell');

async function connect(t: Target): Promise<tls.TLSSocket> {
  if (t.kind === 'direct') {
    const s = tls.connect({ host: 'localhost', port: t.port, servername: 'localhost', ca: t.ca });
    await new Promise<void>((r, j) => {
      s.once('secureConnect', r);
      s.once('error', j);
    });
    s.setNoDelay(true);
    return s;
  }
  const raw = net.connect(t.socketPath);
  raw.write(
    'PROXY TCP4 127.0.0.1 127.0.0.1 40000 3128\r\nCONNECT inference.local:443 HTTP/1.1\r\nHost: inference.local:443\r\n\r\n',
  );
  let buf = Buffer.alloc(0);
  await new Promise<void>((resolve, reject) => {
    const onData = (d: Buffer): void => {
      buf = Buffer.concat([buf, d]);
      if (buf.indexOf('\r\n\r\n') < 0) return;
      raw.off('data', onData);
      raw.pause();
      if (!buf.subarray(0, 12).toString().includes(' 200'))
        reject(new Error(`CONNECT refused: ${buf.toString()}`));
      else resolve();
    };
    raw.on('data', onData);
    raw.once('error', reject);
  });
  const s = tls.connect({ socket: raw, servername: 'inference.local', ca: t.ca });
  await new Promise<void>((r, j) => {
    s.once('secureConnect', r);
    s.once('error', j);
  });
  return s;
}

/**
 * One streamed chat completion on a kept-alive connection: resolves with the milliseconds to the
 * first text delta and to the end of the answer, and its size.
 */
function request(
  s: tls.TLSSocket,
  host: string,
  path: string,
  body: string,
): Promise<{ ttft: number; total: number; bytes: number }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    let ttft = -1;
    let bytes = 0;
    let tail: Buffer = Buffer.alloc(0);
    const onData = (d: Buffer): void => {
      bytes += d.length;
      const look = tail.length > 0 ? Buffer.concat([tail, d]) : d;
      if (ttft < 0 && look.includes(FIRST_TEXT)) ttft = performance.now() - t0;
      // The end of a chunked answer: the last chunk and the blank line after it.
      if (look.subarray(-5).toString('latin1') === '0\r\n\r\n') {
        s.off('data', onData);
        s.off('error', reject);
        resolve({ ttft, total: performance.now() - t0, bytes });
        return;
      }
      tail = Buffer.from(look.subarray(-32));
    };
    s.on('data', onData);
    s.once('error', reject);
    s.write(
      `POST ${path} HTTP/1.1\r\nHost: ${host}\r\nContent-Type: application/json\r\nAuthorization: Bearer sk-dummy\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
    );
  });
}

function where(t: Target): { host: string; path: string } {
  return t.kind === 'direct'
    ? { host: 'localhost', path: '/v1/chat/completions' }
    : { host: 'inference.local', path: '/v1/chat/completions' };
}

let provider: FakeProvider | null = null;

async function run(task: PeerTask): Promise<unknown> {
  const s = await connect(task.target);
  const { host, path } = where(task.target);
  try {
    if (task.cmd === 'ttft') {
      const body = JSON.stringify({
        model: 'bench',
        stream: true,
        messages: [{ role: 'user', content: 'ttft' }],
      });
      const out: number[] = [];
      for (let i = 0; i < task.samples; i++) out.push((await request(s, host, path, body)).ttft);
      return out;
    }
    provider!.fillerDeltas = task.deltas;
    provider!.opts.eventDelayMs = task.pace?.delayMs;
    provider!.opts.burst = task.pace?.burst;
    const body = JSON.stringify({
      model: 'bench',
      stream: true,
      messages: [{ role: 'user', content: 'stream' }],
    });
    const out: { ms: number; bytes: number; busy: number }[] = [];
    for (let i = 0; i < task.rounds; i++) {
      const elu = performance.eventLoopUtilization();
      const r = await request(s, host, path, body);
      out.push({ ms: r.total, bytes: r.bytes, busy: performance.eventLoopUtilization(elu).utilization });
    }
    provider!.fillerDeltas = 0;
    provider!.opts.eventDelayMs = undefined;
    return out;
  } finally {
    s.destroy();
  }
}

async function start(): Promise<ProviderInfo> {
  const ca = TlsAuthority.create({ sandbox: 'bench-provider-ca' });
  const dir = mkdtempSync(join(tmpdir(), 'carapace-bench-router-'));
  const caFile = join(dir, 'ca.pem');
  writeFileSync(caFile, ca.caPem);
  provider = new FakeProvider({
    kind: 'openai',
    host: 'localhost',
    tls: { SNICallback: (name, cb) => cb(null, ca.contextFor({ host: name, kind: 'dns' })) },
  });
  provider.reply = () => ({ text: 'Hello from the bench provider' });
  await provider.start();
  return { url: provider.url, port: provider.port, caFile, caPem: ca.caPem };
}

if (parentPort !== null) {
  const port = parentPort;
  void start().then((info) => port.postMessage(info));
  port.on('message', (task: PeerTask) => {
    run(task).then(
      (result) => port.postMessage({ ok: true, result }),
      (err: unknown) =>
        port.postMessage({ ok: false, error: err instanceof Error ? err.message : String(err) }),
    );
  });
}
