/**
 * Blueprints and onboarding, with the real OpenClaw from the npm registry (skipped, with the reason,
 * where the registry does not answer):
 *
 * - Second onboard: `carapace onboard --non-interactive --agent openclaw --name B` after a first
 *   onboard installed the agent image, timed from the command's start to its exit (the agent
 *   healthy: its dashboard answers through the forward). Target ≤ 30 s. Baseline: OpenClaw's own
 *   gateway started on the host without Carapace, timed until the same page answers.
 * - Disk per additional sandbox: the state directory (the sandbox's workspace excluded) after the
 *   second sandbox minus before it: the image and the runtime are shared, so this is the sandbox's
 *   record, storage, logs and audit. Target ≤ 1 MiB. Beside it: the image a per-sandbox copy would cost.
 * - Idle memory: the resident memory of the sandbox's processes (the init and everything under
 *   it) a minute after it is healthy, beside the same OpenClaw gateway run on the host without
 *   Carapace (its process tree), also idle. The gateway daemon's own RSS is reported on its row.
 *
 * Everything started here is stopped and removed at the end.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  writeFileSync,
} from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { packageRoot } from '../src/sandbox/native-paths.js';
import type { BenchModule, BenchRow } from './framework.js';

const launcher = () => join(packageRoot(), 'dist', 'cli', 'carapace.js');
const MiB = 1024 * 1024;
const IDLE_MS = 60_000;
const UPSTREAM_CA = existsSync('/etc/ssl/certs/ca-certificates.crt')
  ? ['--upstream-ca', '/etc/ssl/certs/ca-certificates.crt']
  : [];

function carapace(home: string, args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [launcher(), ...args], {
    env: { ...process.env, CARAPACE_HOME: home },
    encoding: 'utf8',
    timeout: 900_000,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Bytes under `dir` (allocated blocks, as du counts), skipping the paths in `skip`. */
function diskBytes(dir: string, skip: (path: string) => boolean): number {
  let total = 0;
  const walk = (d: string): void => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      if (skip(p)) continue;
      const st = lstatSync(p);
      total += st.blocks * 512;
      if (st.isDirectory()) walk(p);
    }
  };
  walk(dir);
  return total;
}

/** RSS (KiB) of `pid` and all its descendants. */
function treeRssKiB(pid: number): number {
  const parents = new Map<number, number>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      parents.set(Number(name), ppid);
    } catch {
      // gone
    }
  }
  const tree = new Set([pid]);
  let grew = true;
  while (grew) {
    grew = false;
    for (const [p, pp] of parents) {
      if (tree.has(p) || !tree.has(pp)) continue;
      tree.add(p);
      grew = true;
    }
  }
  let kib = 0;
  for (const p of tree) {
    try {
      const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${p}/status`, 'utf8'));
      kib += Number(m?.[1] ?? 0);
    } catch {
      // gone
    }
  }
  return kib;
}

function answers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path: '/', timeout: 3000 }, (res) => {
      res.resume();
      resolve((res.statusCode ?? 500) < 500);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
    req.end();
  });
}

/** OpenClaw's gateway on the host, from the same image, with the config onboard wrote. */
async function openclawOnHost(
  image: string,
  config: string,
  port: number,
): Promise<{ child: ChildProcess; ms: number }> {
  const dir = mkdtempSync(join(tmpdir(), 'carapace-bench-openclaw-'));
  mkdirSync(join(dir, '.openclaw'));
  writeFileSync(join(dir, '.openclaw', 'openclaw.json'), config.replace(/"port": \d+/, `"port": ${port}`));
  const t0 = process.hrtime.bigint();
  const child = spawn(
    process.execPath,
    [join(image, 'node_modules', 'openclaw', 'openclaw.mjs'), 'gateway', 'run'],
    {
      env: {
        PATH: `${join(image, 'node_modules', '.bin')}:/usr/bin:/bin`,
        HOME: dir,
        OPENCLAW_STATE_DIR: join(dir, '.openclaw-data'),
        OPENCLAW_CONFIG_PATH: join(dir, '.openclaw', 'openclaw.json'),
      },
      stdio: 'ignore',
    },
  );
  while (!(await answers(port))) {
    if (child.exitCode !== null) throw new Error(`openclaw on the host exited (${child.exitCode})`);
    await sleep(100);
  }
  return { child, ms: Number(process.hrtime.bigint() - t0) / 1e6 };
}

function registryAnswers(): boolean {
  return spawnSync('npm', ['ping', '--fetch-retries=0'], { timeout: 30_000 }).status === 0;
}

async function run(): Promise<BenchRow[]> {
  if (!registryAnswers()) {
    process.stderr.write('bench: blueprint skipped: the npm registry does not answer\n');
    return [];
  }
  const home = mkdtempSync(join(tmpdir(), 'carapace-bench-'));
  chmodSync(home, 0o711);
  const state = join(home, 'state');
  let hostAgent: ChildProcess | null = null;
  try {
    const onboard = (name: string) =>
      carapace(home, [
        'onboard',
        '--non-interactive',
        '--agent',
        'openclaw',
        '--name',
        name,
        '--provider',
        'none',
        ...UPSTREAM_CA,
      ]);
    const first = onboard('bench-a');
    if (first.status !== 0) throw new Error(`first onboard failed: ${first.stderr}`);

    const workspaces = join(state, 'workspaces');
    const skip = (p: string) => p === workspaces;
    const before = diskBytes(state, skip);
    const t0 = process.hrtime.bigint();
    const second = onboard('bench-b');
    const secondMs = Number(process.hrtime.bigint() - t0) / 1e6;
    if (second.status !== 0) throw new Error(`second onboard failed: ${second.stderr}`);
    const after = diskBytes(state, skip);
    const images = join(state, 'images');
    const imageBytes = diskBytes(images, () => false);

    const view = JSON.parse(carapace(home, ['sandbox', 'get', 'bench-b', '-o', 'json']).stdout) as {
      id: string;
    };
    const lock = JSON.parse(readFileSync(join(home, 'run', 'sandboxes', `${view.id}.lock`), 'utf8')) as {
      pid: number;
    };
    const imageDir = join(
      images,
      readdirSync(images).find((n) => n.startsWith('sha256-'))!,
    );
    const config = readFileSync(join(workspaces, 'bench-b', '.openclaw', 'openclaw.json'), 'utf8');
    const host = await openclawOnHost(imageDir, config, 28789);
    hostAgent = host.child;

    await sleep(IDLE_MS);
    const sandboxKiB = treeRssKiB(lock.pid);
    const hostKiB = treeRssKiB(host.child.pid!);
    const gatewayPid = Number(
      readFileSync(join(home, 'run', 'gateway.pid'), 'utf8')
        .trim()
        .split(/\s+/)[0],
    );
    const gatewayKiB = Number(
      /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${gatewayPid}/status`, 'utf8'))?.[1] ?? 0,
    );

    return [
      {
        name: 'second onboard of openclaw (image cached) to healthy',
        value: secondMs / 1000,
        unit: 's',
        baseline: host.ms / 1000,
        baselineName: 'openclaw gateway on the host to its first answer',
        target: { max: 30 },
      },
      {
        name: 'disk per additional openclaw sandbox (workspace excluded)',
        value: (after - before) / MiB,
        unit: 'MiB',
        baseline: imageBytes / MiB,
        baselineName: 'the shared agent image (a copy per sandbox)',
        target: { max: 1 },
      },
      {
        name: 'idle openclaw sandbox: RSS of its processes',
        value: sandboxKiB / 1024,
        unit: 'MiB',
        baseline: hostKiB / 1024,
        baselineName: 'the same openclaw gateway on the host, without Carapace',
      },
      {
        name: 'gateway daemon RSS beside two openclaw sandboxes',
        value: gatewayKiB / 1024,
        unit: 'MiB',
      },
    ];
  } finally {
    hostAgent?.kill('SIGTERM');
    for (const n of ['bench-a', 'bench-b']) carapace(home, ['sandbox', 'delete', n]);
    carapace(home, ['gateway', 'stop']);
  }
}

export const blueprintBench: BenchModule = { name: 'blueprint', run };
