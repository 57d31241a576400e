/**
 * `carapace gateway run|start|stop|status`: the gateway daemon in the foreground, in the
 * background, stopped, and described. Root's is the system gateway; a normal user's, their own
 * rootless one (docs/gateway.md).
 */
import type { Command } from 'commander';
import { setTimeout as sleep } from 'node:timers/promises';
import { accessSync, constants } from 'node:fs';
import { resolve } from 'node:path';
import { stateDirs } from '../sandbox/state-dirs.js';
import { GatewayClient, GatewayError, gatewayEndpoint, startGateway } from './gateway-client.js';
import { outputOption } from './output-option.js';
import { carapaceVersion } from './version.js';

interface GatewayStatus {
  version: string;
  pid: number;
  uptimeSeconds: number;
  socket: string;
  rootless: boolean;
  caller: { uid: number; admin: boolean };
}

interface RunOptions {
  maxSandboxes: string;
  maxMemory: string;
  defaultMemory: string;
  restartBackoff: string;
  crashLoop: string;
  resolve: string[];
  allowLocal: string[];
  upstreamCa?: string;
}

const collect = (value: string, previous: string[]) => [...previous, value];

function readable(file: string): string {
  try {
    accessSync(file, constants.R_OK);
  } catch {
    throw new GatewayError('INVALID_INPUT', `--upstream-ca ${file}: cannot read that file`, 400);
  }
  return resolve(file);
}

const SIZE = /^(\d+)(Ki|Mi|Gi|Ti)?$/;
function bytes(text: string): number {
  const m = SIZE.exec(text);
  if (!m) throw new GatewayError('INVALID_INPUT', `"${text}": expected a size like 512Mi or 16Gi`, 400);
  return Number(m[1]) * 1024 ** ['', 'Ki', 'Mi', 'Gi', 'Ti'].indexOf(m[2] ?? '');
}

function duration(text: string, option: string): number {
  const m = /^(\d+)(ms|s|m|h)$/.exec(text);
  if (!m)
    throw new GatewayError('INVALID_INPUT', `${option} ${text}: expected a duration like 500ms, 1s, 5m`, 400);
  return Number(m[1]) * { ms: 1, s: 1e3, m: 6e4, h: 3.6e6 }[m[2] as 'ms']!;
}

function restartSettings(backoff: string, crashLoop: string) {
  const [min, max] = backoff.split(':');
  const runs = Number(crashLoop);
  if (!min || !max)
    throw new GatewayError(
      'INVALID_INPUT',
      `--restart-backoff ${backoff}: expected MIN:MAX, like 1s:5m`,
      400,
    );
  if (!Number.isInteger(runs) || runs < 1)
    throw new GatewayError('INVALID_INPUT', `--crash-loop ${crashLoop}: expected a whole number ≥ 1`, 400);
  return {
    minBackoffMs: duration(min, '--restart-backoff'),
    maxBackoffMs: duration(max, '--restart-backoff'),
    crashLoopRuns: runs,
    stableMs: 10 * 60_000,
  };
}

export function registerGateway(program: Command): void {
  const gateway = program.command('gateway').description('run, start, stop or describe the gateway daemon');

  gateway
    .command('run')
    .description('run the gateway in the foreground (what systemd and `gateway start` run)')
    .option(
      '--max-sandboxes <n>',
      "sandboxes one user may hold (root's and carapace-admin's are not limited)",
      '32',
    )
    .option('--max-memory <size>', "memory limits one user's sandboxes may add up to", '16Gi')
    .option('--default-memory <size>', "memory limit of a user's sandbox whose policy sets none", '2Gi')
    .option(
      '--restart-backoff <min:max>',
      'wait before a restart: doubles per quick run from min to max',
      '1s:5m',
    )
    .option('--crash-loop <runs>', 'quick runs in a row (under 10 minutes each) that make a crash loop', '5')
    .option(
      '--resolve <host=ip>',
      "resolve HOST to IP for every sandbox's egress proxy, instead of DNS (repeatable)",
      collect,
      [],
    )
    .option(
      '--allow-local <ip:port>',
      'trust a host-local upstream the proxy would refuse as SSRF, for every sandbox whose policy allows it (repeatable)',
      collect,
      [],
    )
    .option('--upstream-ca <file>', 'PEM file of extra CAs the proxy trusts for upstream TLS')
    .action(async (opts: RunOptions) => {
      const { Gateway } = await import('../gateway/daemon.js');
      const { parseResolve } = await import('./run-options.js');
      const sandboxes = Number(opts.maxSandboxes);
      if (!Number.isInteger(sandboxes) || sandboxes < 0)
        throw new GatewayError(
          'INVALID_INPUT',
          `--max-sandboxes ${opts.maxSandboxes}: expected a whole number`,
          400,
        );
      const gw = await Gateway.start({
        dirs: stateDirs(),
        version: carapaceVersion(),
        uidBase: process.env.CARAPACE_UID_BASE ? Number(process.env.CARAPACE_UID_BASE) : undefined,
        quotas: {
          sandboxes,
          memoryBytes: bytes(opts.maxMemory),
          defaultMemoryBytes: bytes(opts.defaultMemory),
        },
        restart: restartSettings(opts.restartBackoff, opts.crashLoop),
        proxy: {
          hosts: parseResolve(opts.resolve),
          allowLocal: opts.allowLocal,
          upstreamCaFile: opts.upstreamCa === undefined ? undefined : readable(opts.upstreamCa),
        },
      });
      await new Promise<void>((resolve) => {
        for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.once(sig, () => resolve());
      });
      await gw.close();
    });

  gateway
    .command('start')
    .description('start the gateway in the background, unless one already answers')
    .action(async () => {
      const client = new GatewayClient(gatewayEndpoint());
      if (!(await client.answers())) await startGateway(client.endpoint, process.argv[1]!);
      printStatus(await client.call<GatewayStatus>('GET', '/v1/gateway'), client.endpoint.socket);
    });

  gateway
    .command('stop')
    .description(
      'stop the gateway; its sandboxes run on, and the next gateway re-adopts them (stop them with sandbox stop)',
    )
    .action(async () => {
      const client = new GatewayClient(gatewayEndpoint());
      if (!(await client.answers())) {
        process.stdout.write(`no gateway answers at ${client.endpoint.socket}\n`);
        return;
      }
      const status = await client.call<GatewayStatus>('GET', '/v1/gateway');
      if (!client.endpoint.own) {
        throw new GatewayError(
          'FORBIDDEN',
          `the system gateway is root's to stop (systemctl stop carapace)`,
          403,
        );
      }
      process.kill(status.pid, 'SIGTERM');
      for (let i = 0; i < 600 && (await client.answers()); i++) await sleep(50);
      process.stdout.write(`gateway ${status.pid} stopped\n`);
    });

  outputOption(
    gateway
      .command('status')
      .description("the gateway's pid, version, uptime and socket (exit 3 when none answers)"),
    ['text', 'json'],
  ).action(async (opts: { output: 'text' | 'json' }) => {
    const client = new GatewayClient(gatewayEndpoint());
    if (!(await client.answers())) {
      process.stdout.write(`no gateway answers at ${client.endpoint.socket}\n`);
      process.exitCode = 3;
      return;
    }
    const status = await client.call<GatewayStatus>('GET', '/v1/gateway');
    if (opts.output === 'json') process.stdout.write(JSON.stringify(status, null, 2) + '\n');
    else printStatus(status, client.endpoint.socket);
  });
}

function printStatus(s: GatewayStatus, socket: string): void {
  const up = s.uptimeSeconds;
  const uptime = up < 120 ? `${up}s` : up < 7200 ? `${Math.round(up / 60)}m` : `${(up / 3600).toFixed(1)}h`;
  process.stdout.write(
    `gateway ${s.rootless ? '(rootless) ' : ''}pid ${s.pid}, version ${s.version}, up ${uptime}, socket ${socket}\n`,
  );
}
