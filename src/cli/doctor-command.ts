import type { Command } from 'commander';
import { probeHost, type Capability } from '../sandbox/host-capabilities.js';
import { stateDirs } from '../sandbox/state-dirs.js';
import { carapaceVersion } from './version.js';
import { printableJson } from '../policy/printable.js';

const MARK: Record<Capability['status'], string> = { ok: 'ok  ', degraded: 'warn', missing: 'FAIL' };

/** Capabilities without which no sandbox can start: doctor exits non-zero when one is missing. */
const REQUIRED = new Set(['bwrap', 'userns', 'seccomp']);

/** The Node.js this process runs on (main.ts refuses one older than NODE_MAJOR). */
function nodeRuntime(version: string): Capability {
  const detail = `${process.version} at ${process.execPath} (carapace ${version})`;
  return { id: 'node', title: 'Node.js', status: 'ok', detail };
}

export function registerDoctor(program: Command): void {
  program
    .command('doctor')
    .description("report this host's sandbox capabilities and how to fix what is missing")
    .option('--json', 'print the report as JSON')
    .action(async (opts: { json?: boolean }) => {
      // Like a run, doctor sweeps what crashed runs left (and says so on stderr).
      const dirs = stateDirs();
      const [{ sweepDeadRuns }, { hostIdentities }, { reportLostRuns }] = await Promise.all([
        import('../sandbox/sweep.js'),
        import('../sandbox/identity/identity.js'),
        import('../runtime/one-off-run.js'),
      ]);
      await reportLostRuns(await sweepDeadRuns(dirs, hostIdentities()), dirs);
      const version = carapaceVersion();
      const host = probeHost(dirs.state);
      const report = {
        carapace: { version, node: { version: process.version, path: process.execPath } },
        ...host,
        capabilities: [nodeRuntime(version), ...host.capabilities],
      };
      if (opts.json) {
        process.stdout.write(printableJson(report, 2) + '\n');
      } else {
        const width = Math.max(...report.capabilities.map((c) => c.title.length));
        for (const c of report.capabilities) {
          process.stdout.write(`${MARK[c.status]}  ${c.title.padEnd(width)}  ${c.detail}\n`);
          if (c.impact) process.stdout.write(`      ${''.padEnd(width)}  breaks: ${c.impact}\n`);
          if (c.fix) process.stdout.write(`      ${''.padEnd(width)}  fix:    ${c.fix}\n`);
        }
      }
      const fatal = report.capabilities.filter((c) => c.status === 'missing' && REQUIRED.has(c.id));
      if (fatal.length > 0) process.exitCode = 1;
    });
}
