/**
 * Start-up of the `carapace` command itself, as a user starts it: native/carapace, what
 * ./install.sh puts on PATH, which sends a plain `carapace run` to a running gateway itself and
 * execs the CLI (dist/cli/carapace.js, whose `#!` line starts Carapace's Node) for the rest. The
 * commands are spawned alternately from this process N times each (so a busy moment of the shared
 * machine hits all of them alike), medians compared:
 *
 * - `node -e 0` with the same Node: the floor of every command a user types;
 * - `carapace --version`: the CLI's own floor (target ≤ 1.5× `node -e 0`);
 * - `carapace run -- /bin/true` with a gateway running, as ./install.sh leaves a host: the command
 *   runs in a one-off sandbox the gateway started ahead of it (target ≤ 1.35× `node -e 0`);
 * - the same run sent by the Node CLI (dist/cli/carapace.js run), for comparison;
 * - `carapace run --no-gateway -- /bin/true`: a whole one-shot sandbox set up in the process;
 * - a Node script that only spawns `/bin/true` and waits for it: what any command that runs a
 *   process costs on this Node and machine, before it sets anything up;
 * - Anthropic's sandbox-runtime, `srt -c true` (the devDependency @anthropic-ai/sandbox-runtime),
 *   with a settings file that allows no network and no extra paths, on the same Node: the peer a
 *   one-shot sandbox is compared with (target ≤ 0.35× srt), beside the in-process run (srt has no
 *   daemon to start its sandboxes ahead).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { packageRoot } from '../src/sandbox/native-paths.js';
import type { BenchModule, BenchRow } from './framework.js';
import { startGateway, stopGateway } from './gateway.js';
import { benchHome, median, timeSpawn } from './sandbox-harness.js';

const RUNS = 30;
const WARMUP = 3;
const RUN_TARGET = 1.35;
const VERSION_TARGET = 1.5;
const SRT_TARGET = 0.35;
/** Time for the gateway to start the sandbox of the next run, after one (not measured). */
const settle = () => new Promise((resolve) => setTimeout(resolve, 150));
const SPAWN_TRUE =
  "require('node:child_process').spawn('/bin/true').on('exit', (code) => process.exit(code))";

function srt(): { cli: string; version: string } {
  const require = createRequire(import.meta.url);
  let pkg: string;
  try {
    pkg = require.resolve('@anthropic-ai/sandbox-runtime/package.json');
  } catch {
    throw new Error('@anthropic-ai/sandbox-runtime is not installed: run npm ci (it is a devDependency)');
  }
  const { version } = JSON.parse(readFileSync(pkg, 'utf8')) as { version: string };
  return { cli: join(dirname(pkg), 'dist', 'cli.js'), version };
}

async function run(): Promise<BenchRow[]> {
  const home = await benchHome();
  try {
    const peer = srt();
    const settings = join(home.dir, 'srt-settings.json');
    writeFileSync(
      settings,
      JSON.stringify({
        network: { allowedDomains: [], deniedDomains: [] },
        filesystem: { denyRead: [], allowWrite: [], denyWrite: [] },
      }),
    );
    const front = join(packageRoot(), 'native', 'carapace');
    const cli = join(packageRoot(), 'dist', 'cli', 'carapace.js');
    const env = { ...process.env, CARAPACE_HOME: home.dir };
    const gateway = await startGateway(home.dir);
    const samples = {
      node: [] as number[],
      spawn: [] as number[],
      version: [] as number[],
      run: [] as number[],
      runByCli: [] as number[],
      inProcess: [] as number[],
      srt: [] as number[],
    };
    try {
      for (let i = 0; i < WARMUP + RUNS; i++) {
        const node = await timeSpawn(process.execPath, ['-e', '0']);
        const spawnTrue = await timeSpawn(process.execPath, ['-e', SPAWN_TRUE]);
        const version = await timeSpawn(front, ['--version'], undefined, env);
        const served = await timeSpawn(front, ['run', '--', '/bin/true'], undefined, env);
        await settle(); // the gateway starts the next run's sandbox: not on anyone's clock
        const servedByCli = await timeSpawn(cli, ['run', '--', '/bin/true'], undefined, env);
        await settle();
        const own = await timeSpawn(front, ['run', '--no-gateway', '--', '/bin/true'], undefined, env);
        const theirs = await timeSpawn(process.execPath, [peer.cli, '-s', settings, '-c', 'true']);
        if (i < WARMUP) continue;
        samples.node.push(node);
        samples.spawn.push(spawnTrue);
        samples.version.push(version);
        samples.run.push(served);
        samples.runByCli.push(servedByCli);
        samples.inProcess.push(own);
        samples.srt.push(theirs);
      }
    } finally {
      await stopGateway(gateway);
    }
    const node = median(samples.node);
    const theirs = median(samples.srt);
    const ours = median(samples.inProcess);
    const vsNode = { unit: 'ms', baseline: node, baselineName: `node -e 0, ${process.version}` };
    const vsSrt = { unit: 'ms', baseline: theirs, baselineName: `srt ${peer.version} -c true` };
    return [
      {
        name: `carapace --version (median of ${RUNS})`,
        value: median(samples.version),
        ...vsNode,
        target: { max: VERSION_TARGET * node },
      },
      {
        name: `carapace run -- /bin/true, whole process, a gateway running (median of ${RUNS})`,
        value: median(samples.run),
        ...vsNode,
        target: { max: RUN_TARGET * node },
      },
      {
        name: `the same run sent by the Node CLI, dist/cli/carapace.js (median of ${RUNS})`,
        value: median(samples.runByCli),
        ...vsNode,
      },
      {
        name: `carapace run --no-gateway -- /bin/true: the sandbox set up in the process (median of ${RUNS})`,
        value: ours,
        ...vsNode,
      },
      {
        name: `node -e "spawn /bin/true, wait": any command that runs a process (median of ${RUNS})`,
        value: median(samples.spawn),
        ...vsNode,
      },
      {
        name: `carapace run --no-gateway -- /bin/true beside srt (median of ${RUNS})`,
        value: ours,
        ...vsSrt,
        target: { max: SRT_TARGET * theirs },
      },
      { name: `node -e 0, the floor of both (median of ${RUNS})`, value: node, ...vsSrt },
    ];
  } finally {
    home.remove();
  }
}

export const startupBench: BenchModule = { name: 'startup', run };
