/**
 * One sandbox floods the proxy, another keeps working (issue 10, class 3; acceptance: the second
 * sandbox's tunnel set-up p50 stays within 2× of its unloaded value, and the proxy's RSS grows by no
 * more than the flooder's budget).
 *
 * One EgressProxy serves two sandboxes, as a gateway's does, both driven through their Unix sockets
 * as their relays drive them. A has the limits of the example (`memory: 128Mi`, `cpu: 50m`),
 * so its budgets are the derived ones (16 MiB held, 50 ms/s of proxy work, 512 connections); B
 * has the defaults. In the same run: B's set-up p50 alone; then A opens 2,000 tunnels to a firehose
 * upstream and never reads them (it keeps its connection limit's worth, less room for the loops) while 16 loops replay
 * TLS handshakes against an inspected endpoint; B's set-up p50 again, under that flood. The proxy's
 * RSS is sampled throughout, and its CPU over the loaded phase. The upstreams, A and B are child
 * processes: this process is the proxy alone. A's process plays A's relay and agent, which run in
 * A's cgroups in a real sandbox, so it runs in a cgroup with A's limits (as root; without one it
 * floods as fast as it can, and the row says so).
 */
import { type ChildProcess, fork, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { JsonlAuditLog } from '../src/audit/index.js';
import { compilePolicy, parsePolicy } from '../src/policy/index.js';
import { EgressProxy, type SandboxProxy } from '../src/proxy/egress-proxy.js';
import {
  COST,
  PER_CONNECTION_BYTES,
  PER_CONNECTION_KERNEL_BYTES,
} from '../src/proxy/budget/sandbox-budget.js';
import { TlsAuthority } from '../src/proxy/tls/tls-authority.js';
import { SandboxCgroup } from '../src/sandbox/cgroup/cgroup.js';
import { percentiles, type BenchModule, type BenchRow } from './framework.js';
import type { FloodStats, FloodTask, FloodUpstreams } from './proxy-flood-peer.js';

const MiB = 1024 * 1024;
const SAMPLES = 300;
const TUNNELS = 2000;
/** Room the unread tunnels leave under the connection limit, for the handshake loops. */
const LOOP_ROOM = 24;
const HANDSHAKE_LOOPS = 16;
const FLOOD_WINDOW_MS = 3000;
/** The example: a sandbox limited to 128 MiB and 50m of CPU. */
const FLOODER_LIMITS = { memoryBytes: 128 * MiB, cpuMillis: 50 };

function peer(role: string): ChildProcess {
  return fork(new URL('./proxy-flood-peer.js', import.meta.url), [role], { stdio: 'inherit' });
}

function message<T>(p: ChildProcess): Promise<T> {
  return new Promise((resolve, reject) => {
    p.once('message', (m) => resolve(m as T));
    p.once('error', reject);
  });
}

async function ask<T>(p: ChildProcess, task: FloodTask): Promise<T> {
  p.send(task);
  const reply = await message<{ ok: boolean; result?: T; error?: string }>(p);
  if (!reply.ok) throw new Error(`flood peer: ${reply.error}`);
  return reply.result as T;
}

/** This process's resident set, from the kernel (bytes). */
function rss(): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
  return Number(m?.[1] ?? 0) * 1024;
}

const p50 = (xs: number[]): number => percentiles(Float64Array.from(xs)).p50;

/**
 * Kernel memory of this process's TCP sockets (receive queues and queued sends, `ss -tm`): the
 * proxy's upstream sockets, which its own cgroup pays for, not the sandbox's. null without ss.
 */
function tcpSocketMemory(): number | null {
  const r = spawnSync('ss', ['-tmpnH'], { encoding: 'utf8' });
  if (r.status !== 0) return null;
  let total = 0;
  let mine = false;
  for (const line of r.stdout.split('\n')) {
    if (line.includes('users:(')) mine = line.includes(`pid=${process.pid},`);
    const m = /skmem:\(r(\d+),rb\d+,t\d+,tb\d+,f\d+,w(\d+)/.exec(line);
    if (m && mine) total += Number(m[1]) + Number(m[2]);
  }
  return total;
}

async function run(): Promise<BenchRow[]> {
  const up = peer('upstream');
  const ports = await message<FloodUpstreams>(up);
  const dir = mkdtempSync(join(tmpdir(), 'carapace-flood-bench-'));
  const audit = new JsonlAuditLog(join(dir, 'audit.jsonl'));
  const proxy = new EgressProxy({
    audit,
    hosts: { 'fire.test': '127.0.0.1', 'echo.test': '127.0.0.1', 'api.test': '127.0.0.1' },
    allowLocal: [ports.echoPort, ports.firePort, ports.httpsPort].map((p) => `127.0.0.1:${p}`),
    upstreamCaFile: ports.caFile,
  });
  const parsed = parsePolicy(
    `version: 1
network_policies:
  bench:
    endpoints:
      - { host: fire.test, port: ${ports.firePort} }
      - { host: echo.test, port: ${ports.echoPort} }
      - { host: api.test, port: ${ports.httpsPort}, protocol: rest, access: full }
`,
    'bench.yaml',
  );
  if (!parsed.ok) throw new Error('bench policy');
  const caller = { pid: process.pid, binary: '/usr/bin/curl', ancestors: [] };
  const attach = async (
    name: string,
    limits?: { memoryBytes: number; cpuMillis: number },
  ): Promise<{ sb: SandboxProxy; ca: string }> => {
    const authority = TlsAuthority.create({ sandbox: name });
    const sb = await proxy.attachSandbox({
      name,
      heldBy: 'run',
      socketPath: join(dir, `${name}.sock`),
      generation: compilePolicy(parsed.policy),
      callerResolver: { resolve: async () => ({ ok: true, caller }) },
      authority,
      limits,
    });
    return { sb, ca: authority.caPem };
  };
  const { sb: a, ca: aCa } = await attach('flooder', FLOODER_LIMITS);
  const { sb: b } = await attach('quiet');
  const client = peer('client');
  const flooder = peer('flood');
  await Promise.all([message(client), message(flooder)]);
  let cgroup: SandboxCgroup | null = null;
  try {
    cgroup = SandboxCgroup.create(`bench-flooder-${process.pid}`, FLOODER_LIMITS, false);
    cgroup.enter(flooder.pid as number);
  } catch {
    cgroup = null;
  }
  const route = { socketPath: b.socketPath, host: 'echo.test', port: ports.echoPort };
  const rows: BenchRow[] = [];
  let sampler: NodeJS.Timeout | null = null;
  try {
    // Warm-up, then B alone.
    await ask(client, { cmd: 'latency', ...route, samples: SAMPLES });
    const unloaded = p50(await ask<number[]>(client, { cmd: 'latency', ...route, samples: SAMPLES }));
    const rssBefore = rss();

    // The flood, and B again under it.
    let rssPeak = rssBefore;
    sampler = setInterval(() => (rssPeak = Math.max(rssPeak, rss())), 50);
    const started = await ask<FloodStats>(flooder, {
      cmd: 'flood',
      socketPath: a.socketPath,
      tunnels: TUNNELS,
      keep: a.budgets.maxConnections - LOOP_ROOM,
      fire: `fire.test:${ports.firePort}`,
      handshakeLoops: HANDSHAKE_LOOPS,
      https: `api.test:${ports.httpsPort}`,
      ca: aCa,
    });
    // The flood alone (B idle): what it costs the proxy, and the handshakes A gets.
    await new Promise((r) => setTimeout(r, 1000));
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    const hs0 = (await ask<FloodStats>(flooder, { cmd: 'stats' })).handshakes;
    await new Promise((r) => setTimeout(r, FLOOD_WINDOW_MS));
    const hs1 = (await ask<FloodStats>(flooder, { cmd: 'stats' })).handshakes;
    const seconds = (performance.now() - t0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    // B under the flood.
    const loaded = p50(await ask<number[]>(client, { cmd: 'latency', ...route, samples: SAMPLES }));
    const held = a.budgetStats;
    const sockets = tcpSocketMemory();
    rssPeak = Math.max(rssPeak, rss());
    const budget = a.budgets;
    const memoryBudget = budget.bufferBytes + budget.maxConnections * PER_CONNECTION_BYTES;

    rows.push({
      name: `second sandbox's tunnel set-up p50, while another (${cgroup ? 'in a 50m cgroup' : 'NOT in a cgroup'}) floods: ${TUNNELS} tunnels tried, ${started.opened} kept unread, ${HANDSHAKE_LOOPS} loops replaying TLS handshakes`,
      value: loaded,
      unit: 'ms',
      baseline: unloaded,
      baselineName: 'no flood',
      target: { max: 2 * unloaded },
    });
    rows.push({
      name: 'proxy RSS growth under the flood (peak), flooder limited to 128 MiB',
      value: (rssPeak - rssBefore) / MiB,
      unit: 'MiB',
      baseline: memoryBudget / MiB,
      baselineName: "the flooder's budget: buffers + connections",
      target: { max: memoryBudget / MiB },
    });
    rows.push({
      name: 'bytes the proxy held for the flooder (peak)',
      value: held.peakHeldBytes / MiB,
      unit: 'MiB',
      baseline: budget.bufferBytes / MiB,
      baselineName: "the flooder's buffer budget",
      target: { max: budget.bufferBytes / MiB + 1 },
    });
    if (sockets !== null)
      rows.push({
        name: "kernel memory of the proxy's TCP sockets under the flood (ss -tm: receive queues and queued sends)",
        value: sockets / MiB,
        unit: 'MiB',
        baseline: (budget.maxConnections * PER_CONNECTION_KERNEL_BYTES) / MiB,
        baselineName: "the flooder's connections × a default receive buffer",
      });
    rows.push({
      name: `proxy CPU spent on the flood (second sandbox idle), per second over ${FLOOD_WINDOW_MS / 1000} s`,
      value: (cpu.user + cpu.system) / 1000 / seconds,
      unit: 'ms/s',
      baseline: budget.workMicrosPerSecond / 1000,
      baselineName: "the flooder's work budget (cpu: 50m)",
      // The costs are estimates (COST): within 2× of what the budget counts.
      target: { max: (2 * budget.workMicrosPerSecond) / 1000 },
    });
    rows.push({
      name: "the flooder's TLS terminations served per second",
      value: (hs1 - hs0) / seconds,
      unit: '/s',
      baseline: budget.workMicrosPerSecond / (COST.connection + 2 * COST.tlsHandshake),
      baselineName: 'what its work budget pays for',
    });
  } finally {
    if (sampler) clearInterval(sampler);
    await ask(flooder, { cmd: 'stop' }).catch(() => undefined);
    for (const p of [client, flooder, up]) p.kill();
    cgroup?.destroy();
    await proxy.close();
    audit.close();
    rmSync(dir, { recursive: true, force: true });
  }
  return rows;
}

export const proxyFloodBench: BenchModule = { name: 'proxy-flood', run };
