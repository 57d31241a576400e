/** `carapace policy explain`: what a policy decides for one connection or request, and why. */
import { Option, type Command } from 'commander';
import {
  compilePolicy,
  type ConnectDecision,
  type EndpointView,
  type RequestDecision,
} from '../../policy/index.js';
import { UsageError } from '../errors.js';
import { outputOption } from '../output-option.js';
import { loadAny, reportingPolicyErrors } from './policy-files.js';
import { printableJson } from '../../policy/printable.js';

interface ExplainOptions {
  host: string;
  port: string;
  binary?: string;
  ancestor?: string[];
  method?: string;
  path?: string;
  query?: string;
  output: 'text' | 'json';
  /** The old spelling of `-o json`, kept (hidden) for the scripts that use it. */
  json?: boolean;
}

function parsePort(text: string): number {
  if (!/^\d+$/.test(text) || Number(text) < 1 || Number(text) > 65535) {
    throw new UsageError(`--port must be a TCP port (1–65535), not "${text}"`);
  }
  return Number(text);
}

function describeEndpoint(e: EndpointView): string {
  const parts = [
    `${e.host ?? '(any host)'}:${e.ports.join(',')}`,
    e.inspect ? `${e.protocol} (inspected)` : 'tcp (not inspected)',
  ];
  if (e.access !== null) parts.push(`access ${e.access}`);
  parts.push(e.enforcement);
  if (e.allowedIps.length > 0) parts.push(`allowed_ips ${e.allowedIps.join(', ')}`);
  if (e.credentials.length > 0) parts.push(`credentials ${e.credentials.join(', ')}`);
  return parts.join(', ');
}

function print(rows: [string, string | null | undefined][]): void {
  for (const [k, v] of rows)
    if (v !== null && v !== undefined) process.stdout.write(`${k.padEnd(10)} ${v}\n`);
}

function printConnect(d: ConnectDecision): void {
  const b = d.binary;
  const matched = b === null || b.path === null ? '' : `${b.viaAncestor ? 'ancestor ' : ''}${b.path}`;
  const binary =
    b === null
      ? null
      : b.pattern === null
        ? 'any program (the policy lists no binaries)'
        : `${matched}${b.pattern !== b.path ? ` (matches ${b.pattern})` : ''}`;
  print([
    ['decision', d.allowed ? 'allow' : 'deny'],
    ['policy', d.policy === null ? null : `${d.policy}${d.name !== d.policy ? ` (${d.name})` : ''}`],
    ['endpoint', d.endpoint === null ? null : describeEndpoint(d.endpoint)],
    ['binary', binary],
    [
      'inspect',
      d.allowed ? (d.inspect ? 'yes: requests are judged one by one (use --method/--path)' : 'no') : null,
    ],
    ['reason', d.reason],
  ]);
}

function printRequest(d: RequestDecision): void {
  const decision =
    d.allowed === (d.verdict === 'allow') ? d.verdict : `${d.verdict} (audit: allowed and logged)`;
  print([
    ['decision', decision],
    ['policy', d.policy === null ? null : `${d.policy}${d.name !== d.policy ? ` (${d.name})` : ''}`],
    ['endpoint', d.endpoint === null ? null : describeEndpoint(d.endpoint)],
    ['rule', d.rule === null ? (d.verdict === 'deny' ? '(no rule allows it)' : null) : d.rule.text],
    ['reason', d.reason],
  ]);
}

function explain(file: string, opts: ExplainOptions): void {
  const port = parsePort(opts.port);
  if ((opts.method === undefined) !== (opts.path === undefined)) {
    throw new UsageError(
      '--method and --path go together: give both to explain a request, neither for a connection',
    );
  }
  if (opts.query !== undefined && opts.path === undefined)
    throw new UsageError('--query needs --method and --path');
  const loaded = loadAny(file);
  if (loaded.kind !== 'policy') throw new UsageError(`${file} is a preset; explain needs a policy file`);
  const generation = compilePolicy(loaded.policy);
  const json = opts.output === 'json' || opts.json === true;
  const base = { host: opts.host, port, binary: opts.binary, ancestors: opts.ancestor ?? [] };
  if (opts.method !== undefined && opts.path !== undefined) {
    const d = generation.decideRequest({ ...base, method: opts.method, path: opts.path, query: opts.query });
    if (json) process.stdout.write(`${printableJson(d, 2)}\n`);
    else printRequest(d);
    return;
  }
  const d = generation.decideConnect(base);
  if (json) process.stdout.write(`${printableJson(d, 2)}\n`);
  else printConnect(d);
}

export function registerPolicyExplain(policy: Command): void {
  const cmd = policy
    .command('explain')
    .description(
      'show what a policy decides for a connection (or an HTTP request) and the rule that decides it',
    )
    .argument('<file>', 'policy file')
    .requiredOption('--host <host>', 'host the agent connects to')
    .requiredOption('--port <port>', 'TCP port')
    .option('--binary <path>', 'executable making the connection')
    .addOption(
      new Option('--ancestor <path>', 'an ancestor of the executable, nearest first (repeatable)').argParser(
        (v: string, prev: string[] | undefined) => [...(prev ?? []), v],
      ),
    )
    .option('--method <method>', 'HTTP method of a request')
    .option('--path <path>', 'HTTP path of a request')
    .option('--query <query>', 'query string of a request, e.g. "q=x&page=2"')
    .addOption(new Option('--json', 'the same as -o json').hideHelp());
  outputOption(cmd, ['text', 'json'], 'json: the decision, for scripts');
  cmd.action(reportingPolicyErrors(explain));
}
