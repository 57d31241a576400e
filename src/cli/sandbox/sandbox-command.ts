/**
 * `carapace sandbox …`: always-on sandboxes held by the gateway. Tables for people
 * (sandbox-print.ts), `-o json` for scripts, a spinner on stderr for what may take a while (only
 * on a terminal). The gateway starts on first use when the caller may run one (gateway-client.ts).
 */
import type { Command } from 'commander';
import { join, resolve } from 'node:path';
import { packageRoot } from '../../sandbox/native-paths.js';
import { RunInputError } from '../../runtime/sandbox-spec-from-policy.js';
import {
  GatewayClient,
  GatewayError,
  printedPolicyProblems,
  readCallerFile,
} from '../gateway/gateway-client.js';
import { checkNameOption, parseEnv, parseMount } from '../run/run-options.js';
import { outputOption } from '../output-option.js';
import { auditLine } from './audit-line.js';
import { registerSandboxIo } from './sandbox-io-command.js';
import { withSpinner } from '../terminal.js';
import { say } from '../say.js';
import { forwardTrouble, print, printDetails, type SandboxView } from './sandbox-print.js';
import { printableJson } from '../../policy/printable.js';

const collect = (value: string, previous: string[]) => [...previous, value];
const path = (name: string, owner?: string, op = '') =>
  `/v1/sandboxes/${encodeURIComponent(name)}${op}${owner !== undefined ? `?owner=${encodeURIComponent(owner)}` : ''}`;

export function parseForward(text: string): { hostPort: number; sandboxPort: number } {
  const m = /^(\d{1,5})(?::(\d{1,5}))?$/.exec(text);
  const hostPort = Number(m?.[1]);
  const sandboxPort = Number(m?.[2] ?? m?.[1]);
  if (!m || hostPort < 1 || hostPort > 65535 || sandboxPort < 1 || sandboxPort > 65535) {
    throw new RunInputError(`"${text}": expected HOSTPORT or HOSTPORT:SANDBOXPORT, each 1-65535`);
  }
  return { hostPort, sandboxPort };
}

function parseLabels(pairs: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const p of pairs) {
    const eq = p.indexOf('=');
    if (eq <= 0) throw new RunInputError(`--label "${p}": expected KEY=VALUE`);
    out[p.slice(0, eq)] = p.slice(eq + 1);
  }
  return out;
}

export function registerSandbox(program: Command): void {
  const sandbox = program
    .command('sandbox')
    .alias('sb')
    .description('always-on sandboxes, held by the gateway');

  const create = sandbox
    .command('create')
    .description('create a sandbox and start its command (it keeps running after this command returns)')
    .usage('[options] -- CMD [ARGS…]')
    .argument('<command...>', 'the agent command, after --')
    .option('--name <name>', 'its name (default: from the command)')
    .option('--policy <file>', 'policy YAML (default: the restrictive built-in policy, no network)')
    .option('--workspace <dir>', 'host directory at /sandbox (default: one the gateway keeps for it)')
    .option('--env <name=value>', 'a variable for the agent (repeatable)', collect, [])
    .option(
      '--credential <name>',
      'pass $NAME as a credential: sealed by the gateway, the agent sees a placeholder (repeatable)',
      collect,
      [],
    )
    .option('--mount <host:path[:ro]>', 'map a host path in (repeatable)', collect, [])
    .option(
      '--forward <port[:sandboxport]>',
      "reach a listener inside from the host's loopback (repeatable)",
      collect,
      [],
    )
    .option('--label <key=value>', 'a label (repeatable)', collect, [])
    .option('--restart <policy>', 'never | on-failure | always', 'never')
    .option('--no-start', 'only record it; start it later with sandbox start');
  outputOption(create, ['text', 'json'])
    .passThroughOptions()
    .action(async (command: string[], o: Record<string, unknown>) => {
      if (o.name !== undefined) checkNameOption(o.name as string);
      const credentials: Record<string, string> = {};
      for (const name of o.credential as string[]) {
        const value = process.env[name];
        if (!value)
          throw new RunInputError(
            `--credential ${name}: the environment variable ${name} is not set (export it first)`,
          );
        credentials[name] = value;
      }
      const policy = o.policy === undefined ? undefined : readCallerFile(o.policy as string, '--policy');
      const restart = o.restart as string;
      if (!['never', 'on-failure', 'always'].includes(restart)) {
        throw new RunInputError(`--restart ${restart}: expected never, on-failure or always`);
      }
      const body = {
        name: (o.name as string | undefined) ?? defaultName(command),
        command,
        policy,
        workspace: o.workspace === undefined ? undefined : resolve(o.workspace as string),
        env: parseEnv(o.env as string[]),
        credentials,
        mounts: (o.mount as string[]).map(parseMount),
        forwards: (o.forward as string[]).map((f) => withFlag('--forward', () => parseForward(f))),
        labels: parseLabels(o.label as string[]),
        restart,
        start: o.start !== false,
      };
      const client = await GatewayClient.connect();
      let view: SandboxView;
      try {
        view = await withSpinner(`creating ${body.name}`, () =>
          client.call<SandboxView>('POST', '/v1/sandboxes', body),
        );
      } catch (err) {
        // The gateway names the text after the sandbox; the caller knows it as their file.
        if (printedPolicyProblems(err, `${body.name}.yaml`, o.policy as string | undefined)) return;
        throw notListenable(err, body.name, o.policy as string | undefined);
      }
      if (o.output === 'json') print(view, 'json');
      else process.stdout.write(`${view.name} ${view.state}\n`);
    });

  outputOption(
    sandbox
      .command('list')
      .alias('ls')
      .description('your sandboxes (--all: everyone’s, for root and carapace-admin)')
      .option('--all', "every user's sandboxes"),
    ['table', 'wide', 'json'],
    'wide: more columns, json for scripts',
  ).action(async (o: { all?: boolean; output: 'table' | 'wide' | 'json' }) => {
    const client = await GatewayClient.connect();
    const list = await client.call<SandboxView[]>('GET', `/v1/sandboxes${o.all ? '?all=true' : ''}`);
    print(list, o.output, o.output === 'wide' || o.all === true);
  });

  const get = sandbox
    .command('get')
    .description(
      'one sandbox: its state and why (a failure, a restart waiting), spec, forwards, policy revision',
    )
    .argument('<name>')
    .option('--owner <uid>', "another user's (root and carapace-admin)");
  outputOption(get, ['text', 'wide', 'json'], 'wide: a table row, json for scripts').action(
    async (name: string, o: { owner?: string; output: 'text' | 'wide' | 'json' }) => {
      const client = await GatewayClient.connect();
      const view = await client.call<SandboxView>('GET', path(name, o.owner));
      if (o.output === 'text') printDetails(view);
      else print(view, o.output, o.output === 'wide');
    },
  );

  sandbox
    .command('update')
    .description('change what needs no restart: the restart policy, labels')
    .argument('<name>')
    .option('--restart <policy>', 'never | on-failure | always')
    .option('--label <key=value>', 'the labels, replacing the old ones (repeatable)', collect, [])
    .option('--owner <uid>', "another user's (root and carapace-admin)")
    .action(async (name: string, o: { restart?: string; label: string[]; owner?: string }) => {
      if (o.restart !== undefined && !['never', 'on-failure', 'always'].includes(o.restart)) {
        throw new RunInputError(`--restart ${o.restart}: expected never, on-failure or always`);
      }
      if (o.restart === undefined && o.label.length === 0)
        throw new RunInputError(
          'nothing to change: give --restart never|on-failure|always, or --label KEY=VALUE (repeatable; the labels given replace the old ones)',
        );
      const client = await GatewayClient.connect();
      const view = await client.call<SandboxView>('PATCH', path(name, o.owner), {
        ...(o.restart ? { restart: o.restart } : {}),
        ...(o.label.length ? { labels: parseLabels(o.label) } : {}),
      });
      const labels = Object.entries(view.labels).map(([k, v]) => `${k}=${v}`);
      process.stdout.write(`${view.name} restart=${view.restart} labels=${labels.join(',') || '-'}\n`);
    });

  for (const [op, what] of [
    ['start', 'start a stopped sandbox'],
    ['stop', 'stop a sandbox: SIGTERM to its agent, everything killed after the grace'],
    ['restart', 'stop, then start again'],
  ] as const) {
    sandbox
      .command(op)
      .description(what)
      .argument('<name>')
      .option('--grace <seconds>', 'between SIGTERM and SIGKILL', '10')
      .option('--owner <uid>', "another user's (root and carapace-admin)")
      .action(async (name: string, o: { grace: string; owner?: string }) => {
        const grace = Number(o.grace);
        if (!Number.isFinite(grace) || grace < 0)
          throw new RunInputError(`--grace ${o.grace}: expected seconds`);
        const client = await GatewayClient.connect();
        const view = await withSpinner(`${op} ${name}`, () =>
          client.call<SandboxView>('POST', path(name, o.owner, `/${op}`), {
            grace: Math.round(grace * 1000),
          }),
        );
        process.stdout.write(`${view.name} ${view.state}\n`);
        // It runs, but a forward someone else's program holds does not listen: said, not hidden.
        for (const f of view.forwards.filter((f) => f.reason !== null))
          say(`${view.name}: forward 127.0.0.1:${f.hostPort} → ${f.sandboxPort}${forwardTrouble(f)}`);
      });
  }

  sandbox
    .command('delete')
    .alias('rm')
    .description(
      'stop and remove sandboxes and what is theirs (a workspace you gave is kept, and yours again)',
    )
    .argument('[names...]')
    .option('--all', 'all of your sandboxes')
    .option('--keep-workspace', 'keep the workspace the gateway made too (it becomes yours)')
    .option('--owner <uid>', "another user's (root and carapace-admin)")
    .action(async (names: string[], o: { all?: boolean; keepWorkspace?: boolean; owner?: string }) => {
      const client = await GatewayClient.connect();
      if (o.all) names = (await client.call<SandboxView[]>('GET', '/v1/sandboxes')).map((v) => v.name);
      if (names.length === 0) throw new RunInputError('sandbox delete: name a sandbox, or give --all');
      for (const name of names) {
        const q = new URLSearchParams();
        if (o.owner !== undefined) q.set('owner', o.owner);
        if (o.keepWorkspace) q.set('keepWorkspace', 'true');
        const r = await withSpinner(`deleting ${name}`, () =>
          client.call<{ deleted: string; keptWorkspace: string | null }>(
            'DELETE',
            `/v1/sandboxes/${encodeURIComponent(name)}${q.size ? `?${q}` : ''}`,
          ),
        );
        process.stdout.write(
          `${r.deleted} deleted${r.keptWorkspace ? `; workspace kept at ${r.keptWorkspace}` : ''}\n`,
        );
      }
    });

  registerSandboxIo(sandbox);

  const logs = sandbox
    .command('logs')
    .description("the agent's output (--audit: its audit events)")
    .argument('<name>')
    .option('-f, --follow', 'keep printing what comes')
    .option('--tail <n>', 'only the last N lines (-o json: the last N records)')
    .option('--since <time>', 'only since TIME: an ISO date, or a duration ago like 10m, 2h, 1d')
    .option(
      '--audit',
      'the audit events instead of the output: one line each at a terminal or with -o text, OCSF JSON lines otherwise',
    )
    .option('--type <type>', 'with --audit: denied | allowed | lifecycle | all')
    .option('--host <host>', 'with --audit: only events about this host')
    .option('--owner <uid>', "another user's (root and carapace-admin)");
  outputOption(logs, ['text', 'json'], 'json: the records as the gateway keeps them').action(
    async (name: string, o: Record<string, string | boolean | undefined>, cmd: Command) => {
      const q = new URLSearchParams();
      if (o.follow) q.set('follow', 'true');
      if (o.tail !== undefined) {
        if (!/^\d+$/.test(o.tail as string))
          throw new RunInputError(`--tail ${o.tail as string}: expected a whole number of lines`);
        q.set('tail', o.tail as string);
        // Text shows lines; -o json the records as kept, one per short window of the agent's output.
        if (!o.audit && o.output !== 'json') q.set('lines', 'true');
      }
      if (o.type !== undefined && !['denied', 'allowed', 'lifecycle', 'all'].includes(o.type as string))
        throw new RunInputError(`--type ${o.type as string}: expected denied, allowed, lifecycle or all`);
      if ((o.type !== undefined || o.host !== undefined) && !o.audit)
        throw new RunInputError(`--type and --host filter audit events: add --audit`);
      if (o.since !== undefined) q.set('since', String(sinceMs(o.since as string)));
      if (o.audit) q.set('audit', 'true');
      if (o.type !== undefined) q.set('type', o.type as string);
      if (o.host !== undefined) q.set('host', o.host as string);
      if (o.owner !== undefined) q.set('owner', o.owner as string);
      // Audit events as lines a person reads at a terminal (or asked for with -o text); a pipe or
      // a file gets the OCSF JSON lines, as before.
      const readable =
        o.audit === true &&
        o.output === 'text' &&
        (process.stdout.isTTY || cmd.getOptionValueSource('output') === 'cli');
      const client = await GatewayClient.connect();
      for await (const rec of client.lines<Record<string, unknown>>(
        `/v1/sandboxes/${encodeURIComponent(name)}/logs?${q}`,
      )) {
        if (readable) {
          process.stdout.write(`${auditLine(rec)}\n`);
          continue;
        }
        if (o.audit || o.output === 'json') {
          process.stdout.write(printableJson(rec) + '\n');
          continue;
        }
        // The agent's output as it wrote it, escape codes included (as `docker logs`): it is the
        // agent's terminal output, colours and cursor moves part of it. -o json escapes.
        const text =
          typeof rec.d === 'string' ? rec.d : Buffer.from(String(rec.b ?? ''), 'base64').toString();
        // The init's own lines (a warning, output it dropped) are not the agent's: a line of their own.
        if (rec.s === 'init') process.stderr.write(text.endsWith('\n') ? text : `${text}\n`);
        else (rec.s === 'err' ? process.stderr : process.stdout).write(text);
      }
    },
  );
}

/**
 * A forward to a port the new sandbox's policy does not let it listen on, said with where to add
 * the port: the caller's --policy file, or a policy to write (the default lists none). Any other
 * error as it is.
 */
function notListenable(err: unknown, name: string, policyFile: string | undefined): unknown {
  if (!(err instanceof GatewayError) || err.code !== 'FORWARD_NOT_LISTENABLE') return err;
  const { sandboxPort: port, listenPorts } = err.details as { sandboxPort: number; listenPorts: number[] };
  const list = listenPorts.length ? listenPorts.join(', ') : 'none';
  return new GatewayError(
    err.code,
    policyFile !== undefined
      ? `port ${port} is not one ${name} may listen on (listen_ports in ${policyFile}: ${list}): add ${port} to listen_ports in ${policyFile}`
      : `port ${port} is not one ${name} may listen on (the default policy's listen_ports: ${list}): give --policy FILE with listen_ports: [${port}] (e.g. a copy of ${join(packageRoot(), 'policies', 'default.yaml')} with it added)`,
    err.status,
    err.details,
  );
}

/** Runs a parser whose message names the value; the flag it came with goes first. */
function withFlag<T>(flag: string, parse: () => T): T {
  try {
    return parse();
  } catch (err) {
    if (err instanceof RunInputError) throw new RunInputError(`${flag} ${err.message}`);
    throw err;
  }
}

function defaultName(command: string[]): string {
  const base =
    (command[0] ?? 'sandbox')
      .split('/')
      .pop()!
      .toLowerCase()
      .replace(/[^a-z0-9_.-]/g, '') || 'sandbox';
  return `${base.slice(0, 50)}-${Math.random().toString(16).slice(2, 6)}`;
}

function sinceMs(text: string): number {
  const m = /^(\d+)(s|m|h|d)$/.exec(text);
  if (m) return Date.now() - Number(m[1]) * { s: 1e3, m: 6e4, h: 3.6e6, d: 8.64e7 }[m[2] as 's']!;
  const t = Date.parse(text);
  if (Number.isNaN(t))
    throw new RunInputError(`--since ${text}: expected an ISO date or a duration like 10m`);
  return t;
}

export { GatewayError };
