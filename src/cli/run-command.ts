import type { Command } from 'commander';
import { runOneOff } from '../gateway/one-off-run.js';

const collect = (value: string, previous: string[]) => [...previous, value];

export function registerRun(program: Command): void {
  program
    .command('run')
    .description("run one command in a one-off sandbox (no gateway); its exit code is the command's")
    .usage('[options] -- CMD [ARGS…]')
    .argument('<command...>', 'the command to run inside the sandbox, after --')
    .option(
      '--policy <file>',
      'policy YAML, watched: saving it applies network changes live (default: the restrictive built-in policy, no network)',
    )
    .option(
      '--workspace <dir>',
      'host directory mounted at /sandbox, kept after the run (default: a temporary one)',
    )
    .option('--env <name=value>', 'set a variable in the sandbox (repeatable)', collect, [])
    .option('--mount <host:path[:ro]>', 'map a host path into the sandbox (repeatable)', collect, [])
    .option('--name <name>', 'sandbox name: hostname, and keeps its host uid between runs')
    .option('--audit <file>', 'append OCSF JSON lines of what was enforced to FILE')
    .option('--best-effort-limits', 'start even when a policy limit cannot be applied on this host')
    .option(
      '--resolve <host=ip>',
      'resolve HOST to IP for the egress proxy, instead of DNS (repeatable)',
      collect,
      [],
    )
    .option(
      '--allow-local <ip:port>',
      'trust a host-local upstream the proxy would refuse as SSRF (repeatable)',
      collect,
      [],
    )
    .option('--upstream-ca <file>', 'PEM file of extra CAs the proxy trusts for upstream TLS')
    .option(
      '--credential <name>',
      'pass the environment variable NAME as a credential: the sandbox sees a placeholder, the proxy sends the value to endpoints the policy binds it to (repeatable)',
      collect,
      [],
    )
    .passThroughOptions()
    .action(async (command: string[], opts: Record<string, unknown>) => {
      process.exitCode = await runOneOff({
        policy: opts.policy as string | undefined,
        workspace: opts.workspace as string | undefined,
        env: opts.env as string[],
        mounts: opts.mount as string[],
        name: opts.name as string | undefined,
        audit: opts.audit as string | undefined,
        bestEffortLimits: Boolean(opts.bestEffortLimits),
        command,
        resolve: opts.resolve as string[],
        allowLocal: opts.allowLocal as string[],
        upstreamCa: opts.upstreamCa as string | undefined,
        credentials: opts.credential as string[],
      });
    });
}
