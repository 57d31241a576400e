/**
 * Egress proxy bench: tunnel set-up latency (p50), bulk throughput through a raw CONNECT tunnel,
 * keep-alive request rate through a terminated (inspected) tunnel, each against a direct connection
 * to the same loopback upstream measured in the same run; set-up and throughput also through the
 * proxy Anthropic's sandbox-runtime (srt, the devDependency) runs on the host, in this same
 * process, allowing every host; reload → effect time; and the cost of finding the caller through
 * /proc.
 *
 * Layout: the proxy runs here; the upstream servers and the client run in worker threads (one each
 * with three cores or more; one shared thread on smaller machines, so that the proxy keeps a core of
 * its own), and the direct baseline and the proxied path use the same client and server code.
 * The caller resolver is a fixed identity for the traffic rows (the relay and a sandbox are not part
 * of this bench); the /proc resolver is timed on its own row against real host connections.
 * Targets (issue 4): ≤ +0.5 ms p50 set-up, ≥ 80 % of direct throughput, ≥ 50 % of direct req/s
 * under L7, reload effective ≤ 100 ms.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { createHttpProxyServer } from '@anthropic-ai/sandbox-runtime/dist/sandbox/http-proxy.js';
import { JsonlAuditLog } from '../src/audit/index.js';
import { compilePolicy, parsePolicy, type PolicyGeneration } from '../src/policy/index.js';
import { ProcCallerResolver } from '../src/proxy/identity/caller-identity.js';
import { EgressProxy } from '../src/proxy/egress-proxy.js';
import { TlsAuthority } from '../src/proxy/tls/tls-authority.js';
import { nativeTunnelPump } from '../src/sandbox/native-paths.js';
import { percentiles, type BenchModule, type BenchRow } from './framework.js';
import type { ClientTask, PeerRole, UpstreamInfo } from './proxy-peer.js';

/** The version of srt compared with, as installed (package-lock.json pins it). */
const SRT_VERSION = (
  createRequire(import.meta.url)('@anthropic-ai/sandbox-runtime/package.json') as { version: string }
).version;
const MiB = 1024 * 1024;
const BULK_BYTES = 512 * MiB;
const LATENCY_SAMPLES = 400;
const L7_REQUESTS = 8000;
const L7_CONNECTIONS = 16;
const RELOAD_SAMPLES = 30;
const ROUNDS = 5;

function compile(yaml: string): PolicyGeneration {
  const r = parsePolicy(yaml, 'bench.yaml');
  if (!r.ok) throw new Error(r.diagnostics.map((d) => d.message).join('; '));
  return compilePolicy(r.policy);
}

function policyText(u: UpstreamInfo, withRaw = true): string {
  return `
version: 1
network_policies:
  api:
    endpoints:
      - { host: api.bench.test, port: ${u.httpsPort}, protocol: rest, access: read-only }
${withRaw ? `      - { host: raw.bench.test, port: ${u.echoPort} }\n      - { host: raw.bench.test, port: ${u.sinkPort} }` : ''}
`;
}

function peer(role: PeerRole): Worker {
  const w = new Worker(new URL('./proxy-peer.js', import.meta.url), { workerData: { role } });
  w.setMaxListeners(0);
  return w;
}

function firstMessage<T>(w: Worker): Promise<T> {
  return new Promise((resolve, reject) => {
    w.once('message', resolve);
    w.once('error', reject);
  });
}

async function ask<T>(w: Worker, task: ClientTask): Promise<T> {
  w.postMessage(task);
  const reply = await firstMessage<{ ok: boolean; result?: T; error?: string }>(w);
  if (!reply.ok) throw new Error(`bench client: ${reply.error}`);
  return reply.result as T;
}

const median = (xs: number[]): number => percentiles(Float64Array.from(xs)).p50;

/** srt's host proxy as `srt` starts it, with a filter that allows every host. */
async function startSrtProxy(): Promise<{ port: number; close: () => Promise<void> }> {
  const server = createHttpProxyServer({ filter: () => true });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

/** p50 of the /proc caller lookup for a real loopback connection of this process. */
async function procLookupMicros(): Promise<number> {
  const server = net.createServer(() => undefined);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  const client = net.connect(port, '127.0.0.1');
  await new Promise<void>((r) => client.once('connect', r));
  // rootPid 1: the scan skips its root's descriptors (a sandbox's init), and the owner here is this process.
  const resolver = new ProcCallerResolver({ netPid: process.pid, rootPid: 1 });
  const query = {
    family: 4 as const,
    srcAddress: '127.0.0.1',
    srcPort: client.localPort as number,
    dstAddress: '127.0.0.1',
    dstPort: port,
  };
  const samples: number[] = [];
  for (let i = 0; i < 200; i++) {
    const t0 = performance.now();
    const r = await resolver.resolve(query);
    samples.push((performance.now() - t0) * 1000);
    if (!r.ok) throw new Error(`proc lookup failed: ${r.reason}`);
  }
  client.destroy();
  server.close();
  return median(samples);
}

async function run(): Promise<BenchRow[]> {
  // Each busy thread gets a core when there are at least three; otherwise client and upstream share
  // one thread (both the direct and the proxied runs), and the proxy has the other core.
  const separate = availableParallelism() >= 3;
  const up = peer(separate ? 'upstream' : 'both');
  const info = await firstMessage<UpstreamInfo>(up);
  const cl = separate ? peer('client') : up;
  if (separate) await firstMessage(cl);
  // Audit as in production: JSON lines appended to a file (one synchronous write per event).
  const auditDir = mkdtempSync(join(tmpdir(), 'carapace-bench-audit-'));
  const audit = new JsonlAuditLog(join(auditDir, 'audit.jsonl'));
  const proxy = new EgressProxy({
    audit,
    hosts: { 'api.bench.test': '127.0.0.1', 'raw.bench.test': '127.0.0.1' },
    allowLocal: [info.echoPort, info.sinkPort, info.httpsPort].map((p) => `127.0.0.1:${p}`),
    upstreamCaFile: info.caFile,
    tunnelPump: nativeTunnelPump(),
  });
  const authority = TlsAuthority.create({ sandbox: 'bench' });
  const socketPath = join(mkdtempSync(join(tmpdir(), 'carapace-bench-sock-')), 'proxy.sock');
  const caller = { pid: process.pid, binary: '/usr/bin/curl', ancestors: [] };
  const sb = await proxy.attachSandbox({
    name: 'bench',
    heldBy: 'run',
    socketPath,
    generation: compile(policyText(info)),
    callerResolver: { resolve: async () => ({ ok: true, caller }) },
    authority,
  });
  const srt = await startSrtProxy();
  const rows: BenchRow[] = [];
  try {
    // 1. Set-up latency: connect + CONNECT + upstream connect + one byte echoed.
    const raw = { host: 'raw.bench.test', port: info.echoPort };
    // srt has no hosts map: its clients name the upstream by address.
    const srtRaw = { socketPath: null, proxyPort: srt.port, host: '127.0.0.1', port: info.echoPort };
    await ask(cl, { cmd: 'latency', socketPath, ...raw, samples: 300 });
    await ask(cl, { cmd: 'latency', socketPath: null, ...raw, samples: 300 });
    await ask(cl, { cmd: 'latency', ...srtRaw, samples: 300 });
    const proxied: number[] = [];
    const direct: number[] = [];
    const viaSrt: number[] = [];
    const quarter = LATENCY_SAMPLES / 4;
    for (let round = 0; round < 4; round++) {
      proxied.push(...(await ask<number[]>(cl, { cmd: 'latency', socketPath, ...raw, samples: quarter })));
      direct.push(
        ...(await ask<number[]>(cl, { cmd: 'latency', socketPath: null, ...raw, samples: quarter })),
      );
      viaSrt.push(...(await ask<number[]>(cl, { cmd: 'latency', ...srtRaw, samples: quarter })));
    }
    const pLat = median(proxied);
    const dLat = median(direct);
    rows.push({
      name: 'tunnel set-up (connect → first byte back), p50',
      value: pLat,
      unit: 'ms',
      baseline: dLat,
      baselineName: 'direct',
      target: { max: dLat + 0.5 },
    });
    rows.push({
      name: `tunnel set-up, p50, beside srt ${SRT_VERSION}’s proxy (allowing every host)`,
      value: pLat,
      unit: 'ms',
      baseline: median(viaSrt),
      baselineName: "srt's proxy",
    });

    // 2. Bulk throughput through a raw tunnel (upload of BULK_BYTES).
    const sink = { host: 'raw.bench.test', port: info.sinkPort };
    const mibs = (ms: number): number => BULK_BYTES / MiB / (ms / 1000);
    const srtSink = { socketPath: null, proxyPort: srt.port, host: '127.0.0.1', port: info.sinkPort };
    await ask(cl, { cmd: 'throughput', socketPath, ...sink, bytes: 128 * MiB });
    await ask(cl, { cmd: 'throughput', socketPath: null, ...sink, bytes: 128 * MiB });
    await ask(cl, { cmd: 'throughput', ...srtSink, bytes: 128 * MiB });
    const tp: number[] = [];
    const td: number[] = [];
    const ts: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      tp.push(mibs(await ask<number>(cl, { cmd: 'throughput', socketPath, ...sink, bytes: BULK_BYTES })));
      td.push(
        mibs(await ask<number>(cl, { cmd: 'throughput', socketPath: null, ...sink, bytes: BULK_BYTES })),
      );
      ts.push(mibs(await ask<number>(cl, { cmd: 'throughput', ...srtSink, bytes: BULK_BYTES })));
    }
    const pTp = median(tp);
    const dTp = median(td);
    const sTp = median(ts);
    rows.push({
      name: `raw tunnel throughput (${BULK_BYTES / MiB} MiB), median of ${ROUNDS}`,
      value: pTp,
      unit: 'MiB/s',
      baseline: dTp,
      baselineName: 'direct',
      target: { min: 0.8 * dTp },
    });
    rows.push({
      name: `raw tunnel throughput (${BULK_BYTES / MiB} MiB), beside srt ${SRT_VERSION}’s proxy, median of ${ROUNDS}`,
      value: pTp,
      unit: 'MiB/s',
      baseline: sTp,
      baselineName: "srt's proxy",
      target: { min: sTp },
    });

    // 3. Keep-alive requests per second: terminated + inspected tunnel vs direct TLS.
    const api = {
      host: 'api.bench.test',
      port: info.httpsPort,
      requests: L7_REQUESTS,
      connections: L7_CONNECTIONS,
    };
    // Warm up both paths (JIT) with as many requests as a measured round, twice.
    for (let w = 0; w < 2; w++) {
      await ask(cl, { cmd: 'l7', socketPath, ...api, ca: authority.caPem });
      await ask(cl, { cmd: 'l7', socketPath: null, ...api, ca: info.caPem });
    }
    const rp: number[] = [];
    const rd: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      rp.push(await ask<number>(cl, { cmd: 'l7', socketPath, ...api, ca: authority.caPem }));
      rd.push(await ask<number>(cl, { cmd: 'l7', socketPath: null, ...api, ca: info.caPem }));
    }
    const pRps = median(rp);
    const dRps = median(rd);
    rows.push({
      name: `L7 keep-alive req/s (${L7_CONNECTIONS} conns, TLS terminated, rules), median of ${ROUNDS}`,
      value: pRps,
      unit: 'req/s',
      baseline: dRps,
      baselineName: 'direct TLS',
      target: { min: 0.5 * dRps },
    });

    // 4. Reload → effect: parse + compile + swap, until an open raw tunnel it removes is closed.
    const without = policyText(info, false);
    const withRaw = policyText(info, true);
    const effect: number[] = [];
    for (let i = 0; i < RELOAD_SAMPLES; i++) {
      sb.setGeneration(compile(withRaw));
      const s = net.connect(socketPath);
      s.write(
        `PROXY TCP4 127.0.0.1 127.0.0.1 40001 3128\r\nCONNECT raw.bench.test:${info.echoPort} HTTP/1.1\r\nHost: raw.bench.test\r\n\r\n`,
      );
      await new Promise<void>((r) => s.once('data', () => r()));
      s.write('x\n'); // a line: the proxy decides what a raw tunnel speaks on whole tokens
      await new Promise<void>((r) => s.once('data', () => r()));
      const closed = new Promise<void>((r) => s.once('close', () => r()));
      s.on('error', () => undefined);
      const t0 = performance.now();
      sb.setGeneration(compile(without));
      await closed;
      effect.push(performance.now() - t0);
    }
    rows.push({
      name: 'reload → raw tunnel closed (parse + compile + swap), p50',
      value: median(effect),
      unit: 'ms',
      target: { max: 100 },
    });

    // 5. Caller identity through /proc (host network namespace, real socket).
    rows.push({
      name: "caller lookup via /proc in the host's namespace (all host processes scanned), p50",
      value: await procLookupMicros(),
      unit: 'µs',
    });
  } finally {
    await srt.close();
    await proxy.close();
    audit.close();
    rmSync(auditDir, { recursive: true, force: true });
    await cl.terminate();
    if (separate) await up.terminate();
  }
  return rows;
}

export const proxyBench: BenchModule = { name: 'proxy', run };

/** The rows alone, for callers that do not use the module registry. */
export async function runProxyBench(): Promise<BenchRow[]> {
  return run();
}
