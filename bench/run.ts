/**
 * `npm run bench`: runs every bench module in order, prints one markdown table and writes it, with
 * the machine it ran on, to docs/benchmarks.md. Exits 1 when a row misses its target.
 *
 * To add benchmarks: write a module that returns BenchRow[] (see framework.ts) and add it to
 * MODULES. `node dist/bench/run.js NAME…` runs only the named modules; `--no-write` leaves
 * docs/benchmarks.md alone.
 */
import { existsSync, readFileSync, realpathSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { carapaceNodePath } from '../scripts/carapace-node.js';
import { machineDescription, passes, renderTable, type BenchModule, type BenchRow } from './framework.js';
import { blueprintBench } from './blueprint.js';
import { policyDecisionBench } from './policy-decisions.js';
import { approvalsBench } from './approvals.js';
import { gatewayBench } from './gateway.js';
import { proxyBench } from './proxy.js';
import { sandboxConnectBench } from './sandbox-connect.js';
import { proxyFloodBench } from './proxy-flood.js';
import { routerBench } from './router.js';
import { sandboxExecBench } from './sandbox-exec.js';
import { sandboxMemoryBench } from './sandbox-memory.js';
import { sandboxStartBench } from './sandbox-start.js';
import { sandboxTunnelBench } from './sandbox-tunnel.js';
import { startupBench } from './startup.js';

const MODULES: BenchModule[] = [
  policyDecisionBench,
  sandboxStartBench,
  startupBench,
  sandboxMemoryBench,
  sandboxConnectBench,
  sandboxExecBench,
  proxyBench,
  proxyFloodBench,
  routerBench,
  sandboxTunnelBench,
  gatewayBench,
  approvalsBench,
  blueprintBench,
];

/** The repository root, from dist/bench/run.js or bench/run.ts. */
function repoRoot(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  return here.includes(`${join('dist', 'bench')}`) ? resolve(here, '..', '..') : resolve(here, '..');
}

/** The hand-written reading of the results (bench/notes.md), kept with the table it explains. */
function notes(): string[] {
  const file = join(repoRoot(), 'bench', 'notes.md');
  return existsSync(file) ? [readFileSync(file, 'utf8').trimEnd(), ''] : [];
}

/**
 * The results table with the rows of the modules in `ran` taken from `fresh` and every other
 * module's rows kept from `doc`'s table, in the order of MODULES.
 */
function mergeRows(doc: string, fresh: string[], ran: string[]): string[] {
  const moduleOf = (line: string) => /^\| ([^|]+?) \|/.exec(line)?.[1] ?? '';
  const [header, rule] = fresh;
  // The table of `doc`: the lines after its header, up to the first that is not a row.
  const lines = doc.split('\n');
  const start = lines.findIndex((l) => l.startsWith('| module '));
  const table = start < 0 ? [] : lines.slice(start + 2);
  const end = table.findIndex((l) => !l.startsWith('| '));
  // Rows only: a rule line that slipped into the table (a merge) would otherwise be kept for good.
  const isRule = (l: string) => /^\| -+ \|/.test(l);
  const kept = (end < 0 ? table : table.slice(0, end)).filter(
    (l) => !isRule(l) && !ran.includes(moduleOf(l)),
  );
  const rows = [...kept, ...fresh.slice(2)];
  const order = (l: string) => MODULES.findIndex((m) => m.name === moduleOf(l));
  return [
    header!,
    rule!,
    ...rows
      .map((l, i) => ({ l, i }))
      .sort((a, b) => order(a.l) - order(b.l) || a.i - b.i)
      .map((x) => x.l),
  ];
}

async function main(argv: string[]): Promise<number> {
  // The baselines (`node -e 0`, srt) run on this process's Node: it must be the one Carapace runs on.
  const node = carapaceNodePath(repoRoot());
  if (realpathSync(process.execPath) !== realpathSync(node)) {
    process.stderr.write(
      `bench: runs on ${process.execPath}, not Carapace's Node ${node}: use npm run bench\n`,
    );
    return 2;
  }
  const write = !argv.includes('--no-write');
  const only = argv.filter((a) => !a.startsWith('--'));
  const modules = only.length === 0 ? MODULES : MODULES.filter((m) => only.includes(m.name));
  if (modules.length === 0) {
    process.stderr.write(
      `bench: no module named ${only.join(', ')}; modules: ${MODULES.map((m) => m.name).join(', ')}\n`,
    );
    return 2;
  }
  const rows: { module: string; row: BenchRow }[] = [];
  for (const m of modules) {
    process.stderr.write(`bench: running ${m.name}…\n`);
    for (const row of await m.run()) rows.push({ module: m.name, row });
  }
  const table = renderTable(rows);
  process.stdout.write(`${table.join('\n')}\n`);
  if (write) {
    const file = join(repoRoot(), 'docs', 'benchmarks.md');
    const ran = modules.map((m) => m.name);
    // A run of some modules keeps the other modules' rows from the file (an earlier run's).
    const results =
      modules === MODULES || !existsSync(file) ? table : mergeRows(readFileSync(file, 'utf8'), table, ran);
    const doc = [
      '# Benchmarks',
      '',
      'Written by `npm run bench` (bench/run.ts); do not edit by hand. Each value is a percentile over',
      'many samples; the baseline is measured in the same run on the same machine.',
      '',
      '## Machine',
      '',
      ...machineDescription(),
      ...(modules === MODULES ? [] : [`- Run here: ${ran.join(', ')}; the other rows are from earlier runs`]),
      '',
      '## Results',
      '',
      ...results,
      '',
      ...notes(),
    ];
    writeFileSync(file, doc.join('\n'));
  }
  return rows.some(({ row }) => passes(row) === false) ? 1 : 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
