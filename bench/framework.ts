/**
 * The bench framework: modules return rows, the runner prints one markdown table and writes it,
 * with a description of the machine, to docs/benchmarks.md.
 *
 * A row compares a measurement with a baseline measured in the same run (so a slow machine moves
 * both) and, where there is one, with a target. Timings are percentiles over many samples,
 * never one run.
 */
import { cpus, release, totalmem } from 'node:os';
import { getHeapSpaceStatistics } from 'node:v8';

export interface BenchTarget {
  /** The value must be at most this (timings). */
  max?: number;
  /** The value must be at least this (throughputs). */
  min?: number;
}

export interface BenchRow {
  name: string;
  value: number;
  unit: string;
  /** The same quantity for the baseline, measured in the same run. */
  baseline?: number;
  /** What the baseline is, e.g. "Map.get". */
  baselineName?: string;
  target?: BenchTarget;
}

export interface BenchModule {
  name: string;
  run(): Promise<BenchRow[]> | BenchRow[];
}

export interface Percentiles {
  p50: number;
  p90: number;
  p99: number;
  max: number;
  samples: number;
}

/** Percentiles of a set of samples (any unit). */
export function percentiles(samples: Float64Array): Percentiles {
  const sorted = Float64Array.from(samples).sort();
  const at = (q: number): number => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN;
  return { p50: at(0.5), p90: at(0.9), p99: at(0.99), max: at(1), samples: sorted.length };
}

/**
 * Times `fn(i)` once per sample, in nanoseconds, after a warm-up, and returns the percentiles in
 * microseconds. Each call is timed on its own (hrtime costs a few tens of ns, which the baseline
 * pays too), so p99 shows real tail latency rather than an average.
 */
export function timeEach(
  samples: number,
  fn: (i: number) => unknown,
  warmup = Math.min(samples, 20_000),
): Percentiles {
  let sink = 0;
  for (let i = 0; i < warmup; i++) if (fn(i) !== undefined) sink++;
  const out = new Float64Array(samples);
  for (let i = 0; i < samples; i++) {
    const t0 = process.hrtime.bigint();
    const r = fn(i);
    const t1 = process.hrtime.bigint();
    if (r !== undefined) sink++;
    out[i] = Number(t1 - t0) / 1000;
  }
  if (sink < 0) throw new Error('unreachable');
  return percentiles(out);
}

/**
 * Calls `fn(i)` until V8's young generation has stopped growing and all of it has been used, so
 * that samples timed next see the heap a long-running process has. Returns the number of calls.
 *
 * Why: V8 sizes its young generation by how much survived recent collections, so a run that has
 * just built large structures (a compiled 5,000-endpoint policy) gets its young generation doubled
 * at one of the next collections, and the code timed after that allocates into memory the
 * process has never touched. On this VM the first touch of a page costs ~27 µs (the host backs
 * guest memory lazily): 64 MiB of it put ~16,000 such faults into one timed loop, whichever loop
 * came first, and made its p99 25–50 µs. A process that has run for a while has paid that once.
 * Ends after three collections with no growth and every page of the young generation committed,
 * or after `maxMs`.
 */
export function settleYoungGeneration(fn: (i: number) => unknown, maxMs = 5_000): number {
  const young = () => getHeapSpaceStatistics().find((s) => s.space_name === 'new_space');
  const start = performance.now();
  let calls = 0;
  let stable = 0;
  let last = young();
  while (last !== undefined && performance.now() - start < maxMs) {
    for (let k = 0; k < 1_000; k++) fn(calls++);
    const now = young();
    if (now === undefined) break;
    if (now.space_size !== last.space_size) stable = 0;
    else if (now.space_used_size < last.space_used_size) stable++; // a collection emptied it
    last = now;
    if (stable >= 3 && now.physical_space_size >= now.space_size) break;
  }
  return calls;
}

export function machineDescription(): string[] {
  const cpu = cpus();
  return [
    `- CPU: ${cpu[0]?.model.trim() ?? 'unknown'} (${cpu.length} cores)`,
    `- Memory: ${(totalmem() / 2 ** 30).toFixed(1)} GiB`,
    `- Kernel: Linux ${release()}`,
    `- Node.js: ${process.version}`,
    `- Date: ${new Date().toISOString()}`,
  ];
}

function fmt(value: number): string {
  if (!Number.isFinite(value)) return 'n/a';
  if (value >= 100) return value.toFixed(0);
  if (value >= 10) return value.toFixed(1);
  return value.toFixed(2);
}

function targetText(t: BenchTarget | undefined, unit: string): string {
  if (t === undefined) return '';
  const parts: string[] = [];
  if (t.max !== undefined) parts.push(`≤ ${fmt(t.max)} ${unit}`);
  if (t.min !== undefined) parts.push(`≥ ${fmt(t.min)} ${unit}`);
  return parts.join(', ');
}

export function passes(row: BenchRow): boolean | null {
  if (row.target === undefined) return null;
  if (row.target.max !== undefined && !(row.value <= row.target.max)) return false;
  if (row.target.min !== undefined && !(row.value >= row.target.min)) return false;
  return true;
}

/** One markdown table for all rows. */
export function renderTable(rows: readonly { module: string; row: BenchRow }[]): string[] {
  const lines = [
    '| module | benchmark | value | baseline | ratio | target | result |',
    '| ------ | --------- | ----: | -------- | ----: | ------ | ------ |',
  ];
  for (const { module, row } of rows) {
    const baseline =
      row.baseline === undefined
        ? ''
        : `${fmt(row.baseline)} ${row.unit}${row.baselineName ? ` (${row.baselineName})` : ''}`;
    const ratio = row.baseline === undefined || row.baseline === 0 ? '' : `${fmt(row.value / row.baseline)}×`;
    const ok = passes(row);
    const result = ok === null ? '' : ok ? 'pass' : '**FAIL**';
    lines.push(
      `| ${module} | ${row.name} | ${fmt(row.value)} ${row.unit} | ${baseline} | ${ratio} | ${targetText(row.target, row.unit)} | ${result} |`,
    );
  }
  return lines;
}
