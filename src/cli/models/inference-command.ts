/**
 * `carapace inference …`: a sandbox's routes to models (its policy's `inference` section), set
 * live, tried, and what they have spent.
 *
 *   carapace inference set agent --route cloud=openai/gpt-4.1 --route local=ollama/llama3.2 \
 *     --local local --default cloud --fallback cloud=local
 *   carapace inference set agent --from inference.yaml      (a section, or a policy holding one)
 *   carapace inference get agent
 *   carapace inference test agent [--route cloud]
 *   carapace inference usage [agent]
 */
import type { Command } from 'commander';
import { readFileSync } from 'node:fs';
import { stringify } from 'yaml';
import { formatDiagnostic, parseInferenceSection } from '../../policy/index.js';
import { GatewayClient } from '../gateway/gateway-client.js';
import { UsageError } from '../errors.js';
import { outputOption } from '../output-option.js';
import { printProbe } from './provider-command.js';
import { table } from '../terminal.js';
import { printableJson } from '../../policy/printable.js';

type Json = Record<string, unknown>;

interface InferenceView {
  sandbox: string;
  policyRev: number;
  inference: Json | null;
  routes: {
    name: string;
    provider: string;
    type: string | null;
    baseUrl: string | null;
    model: string;
    local: boolean;
    inline: boolean;
    default: boolean;
  }[];
}

interface Counts {
  requests: number;
  tokensIn: number;
  tokensOut: number;
}

const collect = (value: string, previous: string[]) => [...previous, value];
const path = (name: string, owner: string | undefined, op = '') =>
  `/v1/sandboxes/${encodeURIComponent(name)}/inference${op}${owner !== undefined ? `?owner=${encodeURIComponent(owner)}` : ''}`;

function pairs(list: string[], option: string, what: string): [string, string][] {
  return list.map((p) => {
    const eq = p.indexOf('=');
    if (eq <= 0 || eq === p.length - 1) throw new UsageError(`${option} "${p}": expected ${what}`);
    return [p.slice(0, eq), p.slice(eq + 1)];
  });
}

/** The flags that build a section piece by piece (what `--from` and `--clear` replace whole). */
const PIECE_FLAGS: [key: string, flag: string][] = [
  ['route', '--route'],
  ['default', '--default'],
  ['local', '--local'],
  ['alias', '--alias'],
  ['fallback', '--fallback'],
  ['timeout', '--timeout'],
  ['idleTimeout', '--idle-timeout'],
];

/** The section in a `--from` file, checked where the user can see each problem: in that file. */
function sectionFromFile(file: string): Json {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why =
      code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'it is a directory' : (err as Error).message;
    throw new UsageError(`--from ${file}: ${why}`);
  }
  const r = parseInferenceSection(text, file);
  if (!r.ok) {
    const more = r.diagnostics.length > 1 ? ` (and ${r.diagnostics.length - 1} more)` : '';
    throw new UsageError(formatDiagnostic(r.diagnostics[0]!) + more);
  }
  return r.inference as Json;
}

/** The inference section a `set` command line describes, on top of the current one. */
export function sectionFromFlags(current: Json | null, o: Record<string, unknown>): Json | null {
  // `--from` and `--clear` replace the whole section: a piece given beside them would be dropped
  // without a word, and the user would believe it applied.
  const given = PIECE_FLAGS.filter(([key]) =>
    Array.isArray(o[key]) ? (o[key] as unknown[]).length > 0 : o[key] !== undefined,
  ).map(([, flag]) => flag);
  if (o.clear === true) {
    if (typeof o.from === 'string') given.unshift('--from');
    if (given.length > 0)
      throw new UsageError(`--clear removes the section: drop ${given.join(', ')}, or drop --clear`);
    return null;
  }
  if (typeof o.from === 'string') {
    if (given.length > 0)
      throw new UsageError(
        `--from replaces the whole section: put ${given.join(', ')} in ${o.from}, or drop --from`,
      );
    return sectionFromFile(o.from);
  }
  // Nothing given would send the section back as it is: a "set" that exits 0 having set nothing.
  if (given.length === 0)
    throw new UsageError(
      `nothing to set: give --route NAME=PROVIDER/MODEL (repeatable), ${PIECE_FLAGS.slice(1)
        .map(([, flag]) => flag)
        .join(', ')}, --from FILE or --clear (carapace inference get shows the routes)`,
    );
  const routes: Record<string, Json> = {};
  const flagRoutes = pairs(o.route as string[], '--route', 'NAME=PROVIDER/MODEL');
  const base: Json = { ...(current ?? {}) };
  if (flagRoutes.length === 0) {
    if (current === null)
      throw new UsageError('give --route NAME=PROVIDER/MODEL (repeatable), --from FILE or --clear');
    Object.assign(routes, current.routes as Record<string, Json>);
  }
  for (const [name, target] of flagRoutes) {
    const slash = target.indexOf('/');
    if (slash <= 0 || slash === target.length - 1)
      throw new UsageError(
        `--route "${name}=${target}": expected NAME=PROVIDER/MODEL, e.g. cloud=openai/gpt-4.1`,
      );
    routes[name] = { provider: target.slice(0, slash), model: target.slice(slash + 1) };
  }
  const route = (name: string, option: string): Json => {
    const r = routes[name];
    if (r === undefined)
      throw new UsageError(`${option}: no route "${name}" (routes: ${Object.keys(routes).join(', ')})`);
    return (routes[name] = { ...r });
  };
  for (const name of o.local as string[]) route(name, '--local').local = true;
  for (const [name, alias] of pairs(o.alias as string[], '--alias', 'ROUTE=ALIAS')) {
    const r = route(name, '--alias');
    r.aliases = [...((r.aliases as string[] | undefined) ?? []), alias];
  }
  for (const [name, fb] of pairs(o.fallback as string[], '--fallback', 'ROUTE=FALLBACK')) {
    const r = route(name, '--fallback');
    r.on_unavailable = 'fallback';
    r.fallback = fb;
  }
  for (const [name, d] of pairs(o.timeout as string[], '--timeout', 'ROUTE=DURATION'))
    route(name, '--timeout').timeout = d;
  for (const [name, d] of pairs(o.idleTimeout as string[], '--idle-timeout', 'ROUTE=DURATION'))
    route(name, '--idle-timeout').idle_timeout = d;
  const section: Json = { ...base, routes };
  if (typeof o.default === 'string') section.default = o.default;
  else if (typeof section.default === 'string' && !(section.default in routes)) delete section.default;
  return section;
}

function printView(v: InferenceView, output?: string): void {
  if (output === 'json') {
    process.stdout.write(printableJson(v, 2) + '\n');
    return;
  }
  if (v.inference === null) {
    process.stdout.write(
      `${v.sandbox}: no inference routes (carapace inference set ${v.sandbox} --route NAME=PROVIDER/MODEL)\n`,
    );
    return;
  }
  process.stdout.write(
    table(
      ['ROUTE', 'PROVIDER', 'TYPE', 'MODEL', 'LOCAL', 'DEFAULT'],
      v.routes.map((r) => [
        r.name,
        r.inline ? `${r.baseUrl ?? ''} (inline)` : r.type === null ? `${r.provider} (not found)` : r.provider,
        r.type ?? '-',
        r.model,
        r.local ? 'yes' : '',
        r.default ? 'yes' : '',
      ]),
    ),
  );
}

const n = (x: number) => (x >= 10_000 ? `${Math.round(x / 1000)}k` : String(x));
const countsText = (c: Counts) => `${c.requests} / ${n(c.tokensIn + c.tokensOut)}`;

export function registerInference(program: Command): void {
  const inference = program
    .command('inference')
    .description("a sandbox's routes to models through inference.local: set live, get, test, usage");

  const setCommand = inference
    .command('set')
    .description("replace a sandbox's routes, live (its next request uses them; no restart)")
    .argument('<sandbox>')
    .option(
      '--route <name=provider/model>',
      'a route to a stored provider (repeatable; the routes given replace all routes)',
      collect,
      [],
    )
    .option('--default <route>', 'the route for requests no rule or model name picks')
    .option('--local <route>', 'mark a route local: a model on this host (repeatable)', collect, [])
    .option('--alias <route=alias>', 'a model name that selects the route (repeatable)', collect, [])
    .option(
      '--fallback <route=fallback>',
      'when the route is unavailable, use the fallback (repeatable)',
      collect,
      [],
    )
    .option(
      '--timeout <route=duration>',
      "the route's whole-call timeout, e.g. 30m (repeatable)",
      collect,
      [],
    )
    .option('--idle-timeout <route=duration>', "the route's idle timeout, e.g. 10m (repeatable)", collect, [])
    .option(
      '--from <file>',
      'the whole section from a YAML file (a section, or a policy holding one); no other route flags',
    )
    .option('--clear', 'remove the inference section (no other route flags)')
    .option('--owner <uid>', "another user's sandbox (root and carapace-admin)");
  outputOption(setCommand, ['text', 'json']).action(async (sandbox: string, o: Record<string, unknown>) => {
    const client = await GatewayClient.connect();
    const owner = o.owner as string | undefined;
    const current =
      o.from === undefined && o.clear !== true
        ? (await client.call<InferenceView>('GET', path(sandbox, owner))).inference
        : null;
    const section = sectionFromFlags(current, o);
    const view = await client.call<InferenceView>('PUT', path(sandbox, owner), { inference: section });
    printView(view, o.output as 'text' | 'json');
  });

  outputOption(
    inference
      .command('get')
      .description("a sandbox's routes")
      .argument('<sandbox>')
      .option('--owner <uid>', "another user's sandbox (root and carapace-admin)"),
    ['text', 'json', 'yaml'],
    'json for scripts, yaml: the policy section',
  ).action(async (sandbox: string, o: { owner?: string; output: 'text' | 'json' | 'yaml' }) => {
    const client = await GatewayClient.connect();
    const view = await client.call<InferenceView>('GET', path(sandbox, o.owner));
    if (o.output === 'yaml') {
      process.stdout.write(stringify({ inference: view.inference }));
    } else printView(view, o.output);
  });

  outputOption(
    inference
      .command('test')
      .description("try each route's provider with one minimal request")
      .argument('<sandbox>')
      .option('--route <name>', 'only this route')
      .option('--owner <uid>', "another user's sandbox (root and carapace-admin)"),
    ['text', 'json'],
  ).action(async (sandbox: string, o: { route?: string; owner?: string; output: 'text' | 'json' }) => {
    const client = await GatewayClient.connect();
    const q = new URLSearchParams();
    if (o.owner !== undefined) q.set('owner', o.owner);
    if (o.route !== undefined) q.set('route', o.route);
    const results = await client.call<
      (Parameters<typeof printProbe>[1] & { route: string; provider: string })[]
    >('POST', `/v1/sandboxes/${encodeURIComponent(sandbox)}/inference/test${q.size > 0 ? `?${q}` : ''}`);
    if (o.output === 'json') process.stdout.write(printableJson(results, 2) + '\n');
    else for (const r of results) printProbe(`${r.route} (${r.provider})`, r);
    if (results.some((r) => !r.ok)) process.exitCode = 1;
  });

  const usageCommand = inference
    .command('usage')
    .description(
      'what your sandboxes spent through inference.local, per route: this hour, today (UTC), in all',
    )
    .argument('[sandbox]')
    .option('--all', "every user's sandboxes (root and carapace-admin)")
    .option('--owner <uid>', "another user's sandbox (root and carapace-admin)");
  outputOption(usageCommand, ['table', 'json']).action(
    async (sandbox: string | undefined, o: { all?: boolean; owner?: string; output: 'table' | 'json' }) => {
      const client = await GatewayClient.connect();
      const q = new URLSearchParams();
      if (sandbox !== undefined) q.set('sandbox', sandbox);
      if (o.owner !== undefined) q.set('owner', o.owner);
      if (o.all) q.set('all', 'true');
      const rows = await client.call<
        { sandbox: string; route: string; local: boolean; hour: Counts; day: Counts; total: Counts }[]
      >('GET', `/v1/inference/usage${q.size > 0 ? `?${q}` : ''}`);
      if (o.output === 'json') {
        process.stdout.write(printableJson(rows, 2) + '\n');
        return;
      }
      if (rows.length === 0) {
        process.stdout.write('no inference calls yet\n');
        return;
      }
      process.stdout.write(
        table(
          ['SANDBOX', 'ROUTE', 'THIS HOUR', 'TODAY', 'TOTAL', 'TOKENS IN', 'TOKENS OUT'],
          rows.map((r) => [
            r.sandbox,
            r.route + (r.local ? ' (local)' : ''),
            countsText(r.hour),
            countsText(r.day),
            countsText(r.total),
            String(r.total.tokensIn),
            String(r.total.tokensOut),
          ]),
        ) + 'columns: requests / tokens\n',
      );
    },
  );
}
