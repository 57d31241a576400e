/**
 * One-shot: the whole `carapace run -- /bin/true` process (Node's start-up, the CLI, the policy,
 * the sandbox, the cleanup) against Anthropic's sandbox-runtime `srt -c true` (the devDependency
 * @anthropic-ai/sandbox-runtime), spawned alternately from this process, as root, N times each.
 * srt gets a settings file that allows no network and no extra paths. Target: ≤ 0.35× srt.
 *
 * `node -e 0` is measured alongside: the floor both CLIs stand on.
 */
import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { packageRoot } from '../src/sandbox/native-paths.js';
import type { BenchModule, BenchRow } from './framework.js';
import { benchHome, median, timeSpawn } from './sandbox-harness.js';

const RUNS = 30;
const WARMUP = 3;
const TARGET_RATIO = 0.35;

function srtCli(): string {
  const require = createRequire(import.meta.url);
  try {
    return join(dirname(require.resolve('@anthropic-ai/sandbox-runtime/package.json')), 'dist', 'cli.js');
  } catch {
    throw new Error('@anthropic-ai/sandbox-runtime is not installed: run npm ci (it is a devDependency)');
  }
}

async function run(): Promise<BenchRow[]> {
  const home = await benchHome();
  try {
    const srt = srtCli();
    const settings = join(home.dir, 'srt-settings.json');
    writeFileSync(
      settings,
      JSON.stringify({
        network: { allowedDomains: [], deniedDomains: [] },
        filesystem: { denyRead: [], allowWrite: [], denyWrite: [] },
      }),
    );
    const cli = join(packageRoot(), 'dist', 'src', 'cli', 'main.js');
    const env = { ...process.env, CARAPACE_HOME: home.dir };
    const ours: number[] = [];
    const theirs: number[] = [];
    const node: number[] = [];
    for (let i = 0; i < WARMUP + RUNS; i++) {
      const a = await timeSpawn(process.execPath, [cli, 'run', '--', '/bin/true'], undefined, env);
      const b = await timeSpawn(process.execPath, [srt, '-s', settings, '-c', 'true']);
      const c = await timeSpawn(process.execPath, ['-e', '0']);
      if (i < WARMUP) continue;
      ours.push(a);
      theirs.push(b);
      node.push(c);
    }
    const baseline = median(theirs);
    const base = { unit: 'ms', baseline, baselineName: 'srt -c true' };
    return [
      {
        name: `carapace run -- /bin/true, whole process (median of ${RUNS})`,
        value: median(ours),
        ...base,
        target: { max: TARGET_RATIO * baseline },
      },
      { name: `node -e 0, the floor of both (median of ${RUNS})`, value: median(node), ...base },
    ];
  } finally {
    home.remove();
  }
}

export const sandboxOneShotBench: BenchModule = { name: 'sandbox-oneshot', run };
