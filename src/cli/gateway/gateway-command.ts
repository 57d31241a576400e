/**
 * `carapace gateway run|start|stop|status`: the gateway daemon in the foreground, in the
 * background, stopped, and described. Root's is the system gateway; a normal user's, their own
 * rootless one (docs/gateway.md).
 */
import type { Command } from 'commander';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { stateDirs } from '../../sandbox/state-dirs.js';
import { UsageError } from '../errors.js';
import { GatewayClient, GatewayError, gatewayEndpoint, startGateway } from './gateway-client.js';
import { outputOption } from '../output-option.js';
import {
  addGatewayOptions,
  checkOptions,
  gatewayConfigOf,
  givenOptions,
  mergeOptions,
  readStoredOptions,
  storeOptions,
  type GatewayOptionValues,
} from './gateway-options.js';
import { carapaceVersion } from '../version.js';
import { printableJson } from '../../policy/printable.js';

interface GatewayStatus {
  version: string;
  pid: number;
  uptimeSeconds: number;
  socket: string;
  rootless: boolean;
  caller: { uid: number; admin: boolean };
  /** The options it runs with, as given (`--allow-local 127.0.0.1:11434`, …). */
  options: string[];
}

export function registerGateway(program: Command): void {
  const gateway = program.command('gateway').description('run, start, stop or describe the gateway daemon');

  addGatewayOptions(
    gateway
      .command('run')
      .description('run the gateway in the foreground (what systemd and `gateway start` run)'),
    true,
  ).action(async (opts: GatewayOptionValues, cmd: Command) => {
    const { Gateway } = await import('../../gateway/daemon.js');
    const gw = await Gateway.start({
      dirs: stateDirs(),
      version: carapaceVersion(),
      uidBase: process.env.CARAPACE_UID_BASE ? Number(process.env.CARAPACE_UID_BASE) : undefined,
      ...gatewayConfigOf(opts),
      options: givenOptions(cmd),
    });
    await new Promise<void>((resolve) => {
      for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.once(sig, () => resolve());
    });
    await gw.close();
  });

  addGatewayOptions(
    gateway
      .command('start')
      .description(
        'start the gateway in the background, unless one already answers; the options given are kept for every gateway the CLI starts from now on (gateway status shows them)',
      ),
    false,
  )
    .option('--reset-options', 'forget the options kept by earlier starts (the defaults, then what is given)')
    .action(async (opts: { resetOptions?: boolean }, cmd: Command) => {
      const client = new GatewayClient(gatewayEndpoint());
      const given = givenOptions(cmd);
      const changing = given.length > 0 || opts.resetOptions === true;
      if (changing && !client.endpoint.own)
        throw new GatewayError(
          'FORBIDDEN',
          `the system gateway's options are root's: they are its service's command line (carapace gateway run OPTIONS)`,
          403,
        );
      // Checked before anything is stored or started: a bad option changes nothing.
      const wanted = changing
        ? mergeOptions(opts.resetOptions ? [] : readStoredOptions(client.endpoint.dirs), given)
        : null;
      if (wanted) checkOptions(wanted);
      if (await client.answers()) {
        const status = await client.call<GatewayStatus>('GET', '/v1/gateway');
        if (wanted && wanted.join('\0') !== status.options.join('\0'))
          throw new UsageError(
            `a gateway already runs (pid ${status.pid}) with ${describeOptions(status.options)}: stop it first (carapace gateway stop; its sandboxes run on), then start it with the new ones`,
          );
        if (wanted) storeOptions(client.endpoint.dirs, wanted); // the same: kept for the next start
        printStatus(status, client.endpoint.socket);
        return;
      }
      if (wanted) storeOptions(client.endpoint.dirs, wanted);
      await startGateway(client.endpoint, process.argv[1]!);
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
      // What runs on: a stopped gateway leaves its sandboxes be, which a user should hear.
      const running = (
        await client.call<{ name: string; state: string }[]>(
          'GET',
          `/v1/sandboxes${status.caller.admin ? '?all=true' : ''}`,
        )
      ).filter((s) => s.state === 'running' || s.state === 'creating').length;
      process.kill(status.pid, 'SIGTERM');
      let answers = true;
      for (let i = 0; i < 600 && (answers = await client.answers()); i++) await sleep(50);
      if (answers)
        throw new GatewayError(
          'GATEWAY_RUNNING',
          `gateway ${status.pid} did not stop within 30 s (its log: ${join(client.endpoint.dirs.state, 'gateway.log')})`,
          503,
        );
      process.stdout.write(
        `gateway ${status.pid} stopped` +
          (running === 0
            ? '\n'
            : `; ${running === 1 ? '1 sandbox runs' : `${running} sandboxes run`} on (the next gateway re-adopts ${running === 1 ? 'it' : 'them'}; carapace sandbox stop NAME stops one)\n`),
      );
    });

  outputOption(
    gateway
      .command('status')
      .description("the gateway's pid, version, uptime, socket and options (exit 3 when none answers)"),
    ['text', 'json'],
  ).action(async (opts: { output: 'text' | 'json' }) => {
    const client = new GatewayClient(gatewayEndpoint());
    if (!(await client.answers())) {
      // A script asked for JSON: it gets JSON either way (and the exit code says which).
      process.stdout.write(
        opts.output === 'json'
          ? JSON.stringify({ running: false, socket: client.endpoint.socket }, null, 2) + '\n'
          : client.endpoint.own
            ? `no gateway answers at ${client.endpoint.socket}: start one with carapace gateway start\n`
            : `the system gateway does not answer at ${client.endpoint.socket}: ask the host's administrator (systemctl status carapace)\n`,
      );
      process.exitCode = 3;
      return;
    }
    const status = await client.call<GatewayStatus>('GET', '/v1/gateway');
    if (opts.output === 'json') process.stdout.write(printableJson(status, 2) + '\n');
    else printStatus(status, client.endpoint.socket);
  });
}

function printStatus(s: GatewayStatus, socket: string): void {
  const up = s.uptimeSeconds;
  const uptime = up < 120 ? `${up}s` : up < 7200 ? `${Math.round(up / 60)}m` : `${(up / 3600).toFixed(1)}h`;
  process.stdout.write(
    `gateway ${s.rootless ? '(rootless) ' : ''}pid ${s.pid}, version ${s.version}, up ${uptime}, socket ${socket}\n` +
      `options: ${s.options.length > 0 ? shownArgs(s.options) : 'none (the defaults)'}\n`,
  );
}

function describeOptions(options: readonly string[]): string {
  return `other options (${options.length > 0 ? shownArgs(options) : 'none'})`;
}

/** Arguments as a shell would take them back (a path with a space is quoted). */
function shownArgs(args: readonly string[]): string {
  return args.map((a) => (/^[\w@%+=:,./[\]-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
}
