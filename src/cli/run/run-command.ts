/**
 * `carapace run`. Its options are declared once, below: commander builds the help and reports
 * every malformed command line from them, and `parseRunArgs` reads a well-formed one without
 * loading commander at all (a one-shot sandbox is short enough that the CLI's own start-up shows).
 */
import type { Command } from 'commander';
import { parseArgs } from 'node:util';
import { gatewayCanServe, runThroughGateway } from './run-gateway.js';
import type { RunArgs } from './run-options.js';

const RUN_OPTIONS = {
  policy: {
    type: 'string',
    flags: '--policy <file>',
    help: 'policy YAML, watched: saving it applies network changes live (default: the restrictive built-in policy, no network)',
  },
  workspace: {
    type: 'string',
    flags: '--workspace <dir>',
    help: 'host directory mounted at /sandbox, kept after the run (default: a temporary one)',
  },
  env: {
    type: 'string',
    multiple: true,
    flags: '--env <name=value>',
    help: 'set a variable in the sandbox (repeatable)',
  },
  mount: {
    type: 'string',
    multiple: true,
    flags: '--mount <host:path[:ro]>',
    help: 'map a host path into the sandbox (repeatable)',
  },
  name: {
    type: 'string',
    flags: '--name <name>',
    help: 'sandbox name: hostname, and keeps its host uid between runs',
  },
  audit: {
    type: 'string',
    flags: '--audit <file>',
    help: 'append OCSF JSON lines of what was enforced to FILE',
  },
  'best-effort-limits': {
    type: 'boolean',
    flags: '--best-effort-limits',
    help: 'start even when a policy limit cannot be applied on this host',
  },
  resolve: {
    type: 'string',
    multiple: true,
    flags: '--resolve <host=ip>',
    help: 'resolve HOST to IP for the egress proxy, instead of DNS (repeatable)',
  },
  'allow-local': {
    type: 'string',
    multiple: true,
    flags: '--allow-local <ip:port>',
    help: 'trust a host-local upstream the proxy would refuse as SSRF (repeatable)',
  },
  'upstream-ca': {
    type: 'string',
    flags: '--upstream-ca <file>',
    help: 'PEM file of extra CAs the proxy trusts for upstream TLS',
  },
  credential: {
    type: 'string',
    multiple: true,
    flags: '--credential <name>',
    help: 'pass the environment variable NAME as a credential: the sandbox sees a placeholder, the proxy sends the value only to endpoints the policy binds it to (repeatable)',
  },
  'no-gateway': {
    type: 'boolean',
    flags: '--no-gateway',
    help: 'start the sandbox in this process even when a running gateway has one ready (it has, for runs with none of --policy, --workspace, --mount, --name, --audit and the network options)',
  },
} as const;

type Parsed = {
  policy?: string | undefined;
  workspace?: string | undefined;
  env?: string[] | undefined;
  mount?: string[] | undefined;
  name?: string | undefined;
  audit?: string | undefined;
  bestEffortLimits?: boolean | undefined;
  resolve?: string[] | undefined;
  allowLocal?: string[] | undefined;
  upstreamCa?: string | undefined;
  credential?: string[] | undefined;
  /** False with --no-gateway (commander's name for it). */
  gateway?: boolean | undefined;
};

function toRunArgs(opts: Parsed, command: string[]): RunArgs {
  return {
    policy: opts.policy,
    workspace: opts.workspace,
    env: opts.env ?? [],
    mounts: opts.mount ?? [],
    name: opts.name,
    audit: opts.audit,
    bestEffortLimits: Boolean(opts.bestEffortLimits),
    command,
    resolve: opts.resolve ?? [],
    allowLocal: opts.allowLocal ?? [],
    upstreamCa: opts.upstreamCa,
    credentials: opts.credential ?? [],
    gateway: opts.gateway !== false,
  };
}

/**
 * `[options] -- CMD [ARGS…]`, exactly: known options only, each well-formed, then `--` and a
 * command. Anything else (help, a typo, a missing value or command) is null, and goes to
 * commander, which says what is wrong.
 */
export function parseRunArgs(args: readonly string[]): RunArgs | null {
  const end = args.indexOf('--');
  if (end < 0 || end === args.length - 1) return null;
  try {
    const { values } = parseArgs({ args: args.slice(0, end), options: RUN_OPTIONS, strict: true });
    return toRunArgs(
      {
        ...values,
        bestEffortLimits: values['best-effort-limits'],
        allowLocal: values['allow-local'],
        upstreamCa: values['upstream-ca'],
        gateway: values['no-gateway'] !== true,
      },
      args.slice(end + 1),
    );
  } catch {
    return null;
  }
}

/**
 * Runs the parsed command line: in a sandbox a running gateway has ready when it can serve the
 * run (run-gateway.ts), else its input checked, the host's settings read, one sandbox here.
 */
export async function run(args: RunArgs): Promise<number> {
  if (args.gateway && args.command.length > 0 && gatewayCanServe(args)) {
    const code = await runThroughGateway(args, process.env);
    if (code !== null) return code;
  }
  const [{ runOneOff }, { runHost, runRequest }] = await Promise.all([
    import('../../runtime/one-off-run.js'),
    import('./run-options.js'),
  ]);
  return runOneOff(runRequest(args), runHost());
}

const collect = (value: string, previous: string[]) => [...previous, value];

export function registerRun(program: Command): void {
  const command = program
    .command('run')
    .description("run one command in a one-off sandbox; its exit code is the command's")
    .usage('[options] -- CMD [ARGS…]')
    .argument('<command...>', 'the command to run inside the sandbox, after --');
  for (const option of Object.values(RUN_OPTIONS)) {
    if ('multiple' in option) command.option(option.flags, option.help, collect, []);
    else command.option(option.flags, option.help);
  }
  command.passThroughOptions().action(async (args: string[], opts: Parsed) => {
    process.exitCode = await run(toRunArgs(opts, args));
  });
}
