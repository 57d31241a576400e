/**
 * The gateway daemon, measured from a warm client in this process against a real `carapace
 * gateway run` (a child process, its own CARAPACE_HOME), each beside a baseline of the same run:
 *
 * - create → running through the API, against the one-off start a user sees (`carapace run --
 *   /bin/true`, the whole process), interleaved (target ≤ 1.5×);
 * - `exec -- true` round trip through the API (upgrade, the gateway's bridge, the init), against the
 *   same exec straight on the control socket (target p50 ≤ 10 ms);
 * - 1,000 idle sandboxes under one gateway: `list` p99 (target ≤ 50 ms) and the gateway's RSS
 *   (target ≤ 400 MiB), against a trivial call and the RSS with none;
 * - a gateway restart: from starting the next gateway to the moment a sandbox's agent, which keeps
 *   trying, gets a request through the proxy again (target p50 ≤ 1 s over 20 restarts).
 *
 * CARAPACE_BENCH_SANDBOXES makes the 1,000 fewer (a quick run); the row says how many it held.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { GATEWAY_NODE_FLAGS, GatewayClient } from '../src/cli/gateway/gateway-client.js';
import { execOver } from '../src/sandbox/control/control-exec.js';
import { SandboxControl } from '../src/sandbox/control/control.js';
import { packageRoot } from '../src/sandbox/native-paths.js';
import { percentiles, type BenchModule, type BenchRow } from './framework.js';
import { benchHome, median, statusKiB, timeSpawn } from './sandbox-harness.js';

const CREATES = 30;
const EXECS = 200;
const LISTS = 200;
const RESTARTS = 20;

const launcher = () => join(packageRoot(), 'dist', 'cli', 'carapace.js');

/** A real `carapace gateway run` in `home`, started as the CLI and install.sh's unit start it. */
export async function startGateway(home: string, args: string[] = []): Promise<ChildProcess> {
  // As the CLI and install.sh's unit start it (GATEWAY_NODE_FLAGS: its memory is part of the rows).
  const child = spawn(process.execPath, [...GATEWAY_NODE_FLAGS, launcher(), 'gateway', 'run', ...args], {
    env: { ...process.env, CARAPACE_HOME: home },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => {
      out += String(d);
      if (out.includes('"gateway listening"')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`the gateway exited (${code}): ${out}`)));
  });
  child.stdout!.resume();
  return child;
}

export async function stopGateway(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  await once(child, 'exit');
}

const ms = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e6;

async function execTrue(client: GatewayClient, name: string): Promise<number> {
  const t0 = process.hrtime.bigint();
  const socket = await client.upgrade(`/v1/sandboxes/${name}/exec`);
  const p = execOver(socket, { argv: ['/bin/true'], env: {}, tty: false }, name);
  p.stdin.end();
  p.stdout.resume();
  p.stderr.resume();
  const code = await p.exited;
  if (code !== 0) throw new Error(`exec /bin/true exited ${code}`);
  return ms(t0);
}

async function directExec(control: SandboxControl): Promise<number> {
  const t0 = process.hrtime.bigint();
  const p = control.exec({ argv: ['/bin/true'] });
  p.stdout.resume();
  p.stderr.resume();
  await p.exited;
  return ms(t0);
}

async function run(): Promise<BenchRow[]> {
  const home = await benchHome();
  const rows: BenchRow[] = [];
  let gw = await startGateway(home.dir);
  const client = new GatewayClient({
    socket: join(home.dir, 'run', 'gateway.sock'),
    own: true,
    dirs: home.dirs,
  });
  try {
    // create → running, beside `carapace run -- /bin/true`.
    const creates: number[] = [];
    const oneShots: number[] = [];
    const env = { ...process.env, CARAPACE_HOME: home.dir };
    for (let i = 0; i < CREATES + 3; i++) {
      const t0 = process.hrtime.bigint();
      await client.call('POST', '/v1/sandboxes', { name: `c${i}`, command: ['sleep', 'infinity'] });
      const c = ms(t0);
      const o = await timeSpawn(launcher(), ['run', '--', '/bin/true'], undefined, env);
      if (i >= 3) {
        creates.push(c);
        oneShots.push(o);
      }
      if (i > 0) await client.call('DELETE', `/v1/sandboxes/c${i}`);
    }
    const oneShot = median(oneShots);
    rows.push({
      name: `API create → running, p50 of ${CREATES} (a warm client; the default policy)`,
      value: median(creates),
      unit: 'ms',
      baseline: oneShot,
      baselineName: 'carapace run -- /bin/true, whole process',
      target: { max: oneShot * 1.5 },
    });

    // exec -- true through the API, beside the same exec on the control socket.
    const view = await client.call<{ id: string }>('GET', '/v1/sandboxes/c0');
    const control = new SandboxControl(
      join(home.dir, 'run', 'sandboxes', view.id, 'control', 'control.sock'),
    );
    const viaApi: number[] = [];
    const direct: number[] = [];
    for (let i = 0; i < EXECS + 20; i++) {
      const a = await execTrue(client, 'c0');
      const d = await directExec(control);
      if (i >= 20) {
        viaApi.push(a);
        direct.push(d);
      }
    }
    rows.push({
      name: `exec -- /bin/true through the API, p50 of ${EXECS} (a warm client)`,
      value: median(viaApi),
      unit: 'ms',
      baseline: median(direct),
      baselineName: "the same exec on the sandbox's control socket",
      target: { max: 10 },
    });

    // A gateway restart: how long until a sandbox's requests through the proxy work again.
    const upstream = createServer((_req, res) => res.end('ok'));
    upstream.listen(0, '127.0.0.1');
    await once(upstream, 'listening');
    const port = (upstream.address() as { port: number }).port;
    const agent = [
      'import time, urllib.request as u',
      'while True:',
      '    try:',
      `        u.urlopen("http://host.openshell.internal:${port}/", timeout=5).read()`,
      '        open("/sandbox/ok", "a").write(f"{time.time()}\\n")',
      '    except Exception:',
      '        pass',
      '    time.sleep(0.01)',
    ].join('\n');
    const policy =
      'version: 1\nfilesystem_policy:\n  read_only: [/usr, /lib, /lib64, /bin, /etc]\n  read_write: [/sandbox, /tmp]\n' +
      `network_policies:\n  host:\n    name: host\n    endpoints:\n      - { host: host.openshell.internal, port: ${port}, access: full }\n`;
    const tryer = await client.call<{ workspace: string }>('POST', '/v1/sandboxes', {
      name: 'tryer',
      command: ['python3', '-c', agent],
      policy,
    });
    const okFile = join(tryer.workspace, 'ok');
    const lastOk = () => {
      if (!existsSync(okFile)) return 0;
      const lines = readFileSync(okFile, 'utf8').trim().split('\n');
      return Number(lines[lines.length - 1]) * 1000;
    };
    while (lastOk() === 0) await new Promise((r) => setTimeout(r, 20));
    const restarts: number[] = [];
    for (let i = 0; i < RESTARTS; i++) {
      await stopGateway(gw);
      const t0 = Date.now();
      gw = await startGateway(home.dir);
      while (lastOk() <= t0) await new Promise((r) => setTimeout(r, 5));
      restarts.push(lastOk() - t0);
    }
    upstream.close();
    rows.push({
      name: `gateway restart → a sandbox's requests through the proxy served again, p50 of ${RESTARTS}`,
      value: percentiles(Float64Array.from(restarts)).p50,
      unit: 'ms',
      target: { max: 1000 },
    });
    await client.call('DELETE', '/v1/sandboxes/tryer');

    // 1,000 idle sandboxes.
    const held = Number(process.env.CARAPACE_BENCH_SANDBOXES ?? 1000);
    const rssNone = statusKiB(gw.pid!, 'VmRSS') / 1024;
    const trivial: number[] = [];
    for (let i = 0; i < LISTS; i++) {
      const t0 = process.hrtime.bigint();
      await client.call('GET', '/v1/gateway');
      trivial.push(ms(t0));
    }
    for (let i = 1; i < held; i += 4) {
      await Promise.all(
        [0, 1, 2, 3]
          .filter((k) => i + k < held)
          .map((k) =>
            client.call('POST', '/v1/sandboxes', { name: `idle${i + k}`, command: ['sleep', 'infinity'] }),
          ),
      );
    }
    // Idle: the last starts' work done (their events, the audit's flush), and a first list made
    // (it serializes every new sandbox's view once; later ones reuse them).
    await sleep(2_000);
    for (let i = 0; i < 3; i++) await client.call('GET', '/v1/sandboxes');
    const lists: number[] = [];
    let count = 0;
    for (let i = 0; i < LISTS; i++) {
      const t0 = process.hrtime.bigint();
      count = (await client.call<unknown[]>('GET', '/v1/sandboxes')).length;
      lists.push(ms(t0));
    }
    rows.push({
      name: `list with ${count} idle sandboxes, p99 of ${LISTS}`,
      value: percentiles(Float64Array.from(lists)).p99,
      unit: 'ms',
      baseline: percentiles(Float64Array.from(trivial)).p99,
      baselineName: 'GET /v1/gateway, p99',
      target: { max: 50 },
    });
    rows.push({
      name: `gateway RSS with ${count} idle sandboxes`,
      value: statusKiB(gw.pid!, 'VmRSS') / 1024,
      unit: 'MiB',
      baseline: rssNone,
      baselineName: 'with one',
      target: { max: 400 },
    });
    for (const v of await client.call<{ name: string }[]>('GET', '/v1/sandboxes')) {
      await client.call('DELETE', `/v1/sandboxes/${v.name}`);
    }
  } finally {
    await stopGateway(gw);
    home.remove();
  }
  return rows;
}

export const gatewayBench: BenchModule = { name: 'gateway', run };
