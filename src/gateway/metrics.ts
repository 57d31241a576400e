/**
 * `GET /metrics`: the gateway in the Prometheus text exposition format (0.0.4), on the same API
 * sockets as everything else, so a scraper is a caller like any other.
 *
 * Scope: per-sandbox series (labelled `sandbox` and `owner`, the owner's uid) and the counts of
 * sandboxes by state cover the caller's own sandboxes; root and carapace-admin see every user's.
 * The gateway's own series (event-loop lag, process memory and CPU, uptime) are the same for every
 * caller: they say how the shared daemon is doing, nothing about anyone's sandboxes.
 *
 * Counters of a sandbox's proxy (connections, refusals, bytes) belong to one run of it: they start
 * at 0 when it starts, as a process's counters do when it restarts, which Prometheus's rate() and
 * increase() take for a reset. Nothing here keeps state per sandbox, so a deleted sandbox leaves
 * nothing behind. Rendering reads what is already counted; it never blocks on a sandbox.
 */
import { getHeapSpaceStatistics } from 'node:v8';
import { readdir } from 'node:fs/promises';
import { monitorEventLoopDelay, type ELDHistogram } from 'node:perf_hooks';
import type { Caller } from './api/router.js';
import type { SandboxLauncher } from './sandboxes/sandbox-launcher.js';
import type { SandboxRecord, SandboxStore } from './store/sandbox-store.js';

export const METRICS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

const STATES = ['creating', 'running', 'stopping', 'stopped', 'failed'] as const;

/** How long each event-loop lag window lasts: the series show the last complete one. */
const LAG_WINDOW_MS = 10_000;

/** How often the event loop is sampled (see the constructor). */
const LAG_RESOLUTION_MS = 50;

export interface MetricsOptions {
  store: SandboxStore;
  launcher: SandboxLauncher;
  version: string;
  startedAt: number;
}

export interface LagWindow {
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

/**
 * A window of loop samples as lag in seconds. Node's histogram records each sample's whole
 * interval, the resolution included (an idle loop sampled every 50 ms reads 50 ms): how late a
 * timer ran is what is left once the resolution is taken away.
 */
export function lagWindow(
  h: Pick<ELDHistogram, 'count' | 'max' | 'percentile'>,
  resolutionMs: number,
): LagWindow {
  if (h.count === 0) return { p50: 0, p90: 0, p99: 0, max: 0 };
  const s = (ns: number) => (Number.isFinite(ns) ? Math.max(0, ns / 1e6 - resolutionMs) / 1000 : 0);
  return { p50: s(h.percentile(50)), p90: s(h.percentile(90)), p99: s(h.percentile(99)), max: s(h.max) };
}

export class GatewayMetrics {
  private readonly lag: ELDHistogram;
  private window: LagWindow = { p50: 0, p90: 0, p99: 0, max: 0 };
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly opts: MetricsOptions) {
    // Samples the loop every 50 ms: the lag of one sample is how late its timer fired. Each sample
    // wakes the gateway; at Node's default 10 ms those wake-ups alone were 1.1–1.3% of a core on
    // an idle gateway (100 a second), at 50 ms about a fifth of it, and a stall still shows.
    this.lag = monitorEventLoopDelay({ resolution: LAG_RESOLUTION_MS });
    this.lag.enable();
    // Fixed windows, so that what one scraper sees does not depend on when another scraped.
    this.timer = setInterval(() => this.roll(), LAG_WINDOW_MS);
    this.timer.unref();
  }

  private roll(): void {
    this.window = lagWindow(this.lag, LAG_RESOLUTION_MS);
    this.lag.reset();
  }

  /** The exposition for `caller`: their own sandboxes' series (everyone's for an admin). */
  async render(caller: Caller): Promise<string> {
    const fds = await openFds();
    const records = this.opts.store.list(caller.admin ? undefined : caller.uid);
    const out = new Exposition();
    this.gatewaySeries(out, fds);
    this.sandboxSeries(out, records);
    return out.text();
  }

  private gatewaySeries(out: Exposition, fds: number | null): void {
    const { version, startedAt } = this.opts;
    out.family('carapace_gateway_info', 'gauge', 'the gateway: its version (always 1)');
    out.sample('carapace_gateway_info', { version }, 1);
    out.family('carapace_gateway_start_time_seconds', 'gauge', 'when the gateway started, unix seconds');
    out.sample('carapace_gateway_start_time_seconds', {}, startedAt / 1000);
    out.family(
      'carapace_event_loop_lag_seconds',
      'gauge',
      `how late the gateway's event loop ran timers over the last ${LAG_WINDOW_MS / 1000} s, by quantile (1: the worst)`,
    );
    for (const [q, v] of [
      ['0.5', this.window.p50],
      ['0.9', this.window.p90],
      ['0.99', this.window.p99],
      ['1', this.window.max],
    ] as const) {
      out.sample('carapace_event_loop_lag_seconds', { quantile: q }, v);
    }
    const cpu = process.cpuUsage();
    out.family('process_cpu_seconds_total', 'counter', 'user and system CPU time of the gateway process');
    out.sample('process_cpu_seconds_total', {}, (cpu.user + cpu.system) / 1e6);
    out.family('process_resident_memory_bytes', 'gauge', 'resident memory of the gateway process');
    out.sample('process_resident_memory_bytes', {}, process.memoryUsage.rss());
    const mem = process.memoryUsage();
    out.family('nodejs_heap_used_bytes', 'gauge', "bytes the gateway's JavaScript heap holds");
    out.sample('nodejs_heap_used_bytes', {}, mem.heapUsed);
    out.family(
      'nodejs_external_memory_bytes',
      'gauge',
      'bytes held outside the heap by JavaScript objects (buffers)',
    );
    out.sample('nodejs_external_memory_bytes', {}, mem.external);
    out.family('nodejs_heap_space_size_bytes', 'gauge', 'bytes V8 has committed for each space of the heap');
    for (const space of getHeapSpaceStatistics()) {
      out.sample('nodejs_heap_space_size_bytes', { space: space.space_name }, space.space_size);
    }
    if (fds !== null) {
      out.family('process_open_fds', 'gauge', 'file descriptors the gateway process holds');
      out.sample('process_open_fds', {}, fds);
    }
  }

  private sandboxSeries(out: Exposition, records: SandboxRecord[]): void {
    const byState = new Map<string, number>(STATES.map((s) => [s, 0]));
    for (const r of records) byState.set(r.state, (byState.get(r.state) ?? 0) + 1);
    out.family('carapace_sandboxes', 'gauge', 'sandboxes by state');
    for (const [state, n] of byState) out.sample('carapace_sandboxes', { state }, n);

    const label = (r: SandboxRecord) => ({ sandbox: r.name, owner: String(r.ownerUid) });
    const running = records
      .map((r) => ({ r, proxy: this.opts.launcher.get(r.id)?.proxy ?? null }))
      .filter((x) => x.proxy !== null);

    out.family('carapace_sandbox_state', 'gauge', 'the state of each sandbox (1 for the state it is in)');
    for (const r of records) {
      for (const state of STATES)
        out.sample('carapace_sandbox_state', { ...label(r), state }, r.state === state ? 1 : 0);
    }
    out.family(
      'carapace_sandbox_restarts_total',
      'counter',
      'restarts of each sandbox by its restart policy',
    );
    for (const r of records) out.sample('carapace_sandbox_restarts_total', label(r), r.restarts);
    out.family('carapace_sandbox_policy_revision', 'gauge', 'the latest policy revision of each sandbox');
    for (const r of records) out.sample('carapace_sandbox_policy_revision', label(r), r.spec.policyRev);

    out.family(
      'carapace_proxy_connections',
      'gauge',
      "connections open now through each running sandbox's proxy",
    );
    out.family(
      'carapace_proxy_connections_total',
      'counter',
      'connections each sandbox opened through the proxy',
    );
    out.family('carapace_proxy_tunnels', 'gauge', 'raw tunnels open now (re-judged at every policy change)');
    out.family(
      'carapace_proxy_denials_total',
      'counter',
      'refusals by the proxy: connections (connect) and requests (request)',
    );
    out.family(
      'carapace_proxy_bytes_total',
      'counter',
      'bytes between each sandbox and the proxy, by direction (a bulk tunnel is counted as its carapace-pump reports: every 4 MiB and at its end)',
    );
    out.family(
      'carapace_proxy_policy_generation',
      'gauge',
      'the network policy generation in force in each running sandbox',
    );
    out.family(
      'carapace_sandbox_cpu_seconds_total',
      'counter',
      "CPU time of each running sandbox's processes (user + system, with the children they reaped)",
    );
    out.family(
      'carapace_sandbox_memory_bytes',
      'gauge',
      "resident memory of each running sandbox's processes (a page two of them share counts twice)",
    );
    for (const r of records) {
      const usage = this.opts.launcher.usage(r.id);
      if (usage === null) continue;
      out.sample('carapace_sandbox_cpu_seconds_total', label(r), usage.cpuSeconds);
      out.sample('carapace_sandbox_memory_bytes', label(r), usage.rssBytes);
    }
    for (const { r, proxy } of running) {
      const c = proxy!.counters;
      const l = label(r);
      out.sample('carapace_proxy_connections', l, proxy!.openConnections);
      out.sample('carapace_proxy_connections_total', l, c.connections);
      out.sample('carapace_proxy_tunnels', l, proxy!.openTunnels);
      out.sample('carapace_proxy_denials_total', { ...l, kind: 'connect' }, c.deniedConnections);
      out.sample('carapace_proxy_denials_total', { ...l, kind: 'request' }, c.deniedRequests);
      out.sample('carapace_proxy_bytes_total', { ...l, direction: 'from_sandbox' }, c.bytesFromSandbox);
      out.sample('carapace_proxy_bytes_total', { ...l, direction: 'to_sandbox' }, c.bytesToSandbox);
      out.sample('carapace_proxy_policy_generation', l, proxy!.generation);
    }
  }

  close(): void {
    clearInterval(this.timer);
    this.lag.disable();
  }
}

/** Text exposition 0.0.4: `# HELP`, `# TYPE`, then the samples of each family together. */
class Exposition {
  private readonly families = new Map<string, { head: string; samples: string[] }>();

  family(name: string, type: 'gauge' | 'counter', help: string): void {
    this.families.set(name, {
      head: `# HELP ${name} ${escapeHelp(help)}\n# TYPE ${name} ${type}\n`,
      samples: [],
    });
  }

  sample(name: string, labels: Record<string, string>, value: number): void {
    const l = Object.entries(labels)
      .map(([k, v]) => `${k}="${escapeLabel(v)}"`)
      .join(',');
    this.families.get(name)!.samples.push(`${name}${l ? `{${l}}` : ''} ${formatValue(value)}\n`);
  }

  text(): string {
    let out = '';
    for (const f of this.families.values()) out += f.head + f.samples.join('');
    return out;
  }
}

const escapeHelp = (s: string) => s.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
const escapeLabel = (s: string) => s.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
const formatValue = (v: number) => (Number.isFinite(v) ? String(v) : v > 0 ? '+Inf' : v < 0 ? '-Inf' : 'NaN');

async function openFds(): Promise<number | null> {
  try {
    return (await readdir('/proc/self/fd')).length;
  } catch {
    return null;
  }
}
