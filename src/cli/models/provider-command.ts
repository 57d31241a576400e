/**
 * `carapace provider …`: the model providers the gateway keeps for the caller. A key is read from
 * an environment variable (`--credential-env VAR`) or standard input (`--credential-stdin`), never
 * from the command line (argv is readable by every process of the host), and sent to the gateway
 * over the caller's own socket; it is never printed again (`get` shows its fingerprint).
 */
import type { Command } from 'commander';
import { closest, PROVIDER_TYPES } from '../../policy/index.js';
import { GatewayClient } from '../gateway/gateway-client.js';
import { UsageError } from '../errors.js';
import { outputOption } from '../output-option.js';
import { table } from '../terminal.js';
import { printableJson } from '../../policy/printable.js';

interface ProviderView {
  name: string;
  owner: number;
  type: string;
  baseUrl: string;
  fingerprint: string | null;
  createdAt: string;
  updatedAt: string;
}

interface ProbeView {
  ok: boolean;
  status: number | null;
  latencyMs: number;
  models: string[];
  error?: string;
}

const ownerQuery = (owner: string | undefined) =>
  owner !== undefined ? `?owner=${encodeURIComponent(owner)}` : '';
const providerPath = (name: string, owner?: string, op = '') =>
  `/v1/providers/${encodeURIComponent(name)}${op}${ownerQuery(owner)}`;

/** The key from `--credential-env VAR` or `--credential-stdin`; undefined when neither is given. */
export async function readCredential(o: {
  credentialEnv?: string;
  credentialStdin?: boolean;
}): Promise<string | undefined> {
  if (o.credentialEnv !== undefined && o.credentialStdin)
    throw new UsageError('give the key one way: --credential-env VAR or --credential-stdin, not both');
  if (o.credentialEnv !== undefined) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(o.credentialEnv))
      // Not echoed: what stands in the name's place is most likely the key itself.
      throw new UsageError(
        '--credential-env: expected the name of an environment variable (export KEY_VAR=…, then --credential-env KEY_VAR), never the key itself',
      );
    const v = process.env[o.credentialEnv];
    if (v === undefined || v === '')
      throw new UsageError(
        `--credential-env ${o.credentialEnv}: the environment variable is not set (export it first)`,
      );
    return v;
  }
  if (o.credentialStdin) {
    if (process.stdin.isTTY) return promptHidden();
    const chunks: Buffer[] = [];
    for await (const c of process.stdin as AsyncIterable<Buffer>) chunks.push(c);
    const v = Buffer.concat(chunks)
      .toString('utf8')
      .replace(/\r?\n$/, '');
    if (v === '') throw new UsageError('--credential-stdin: standard input was empty');
    return v;
  }
  return undefined;
}

/**
 * `--credential-stdin` at a terminal: one line, typed without echo. Read whole, the terminal would
 * show the key as it is typed (and keep it in its scrollback) and wait for Ctrl-D after Enter.
 */
async function promptHidden(): Promise<string> {
  const stdin = process.stdin;
  // Echo off before the prompt: what is typed once the prompt shows is never echoed.
  stdin.setRawMode(true);
  process.stderr.write('API key (not shown; Enter to finish): ');
  let key = '';
  try {
    for await (const chunk of stdin as AsyncIterable<Buffer>) {
      for (const ch of chunk.toString('utf8')) {
        if (ch === '\r' || ch === '\n') {
          if (key === '') throw new UsageError('--credential-stdin: no key was typed');
          return key;
        }
        if (ch === '\u0003' || ch === '\u0004') throw new UsageError('--credential-stdin: cancelled');
        if (ch === '\u007f' || ch === '\b') key = key.slice(0, -1);
        else if (ch >= ' ') key += ch;
      }
    }
    throw new UsageError('--credential-stdin: standard input ended before Enter');
  } finally {
    stdin.setRawMode(false);
    stdin.pause();
    process.stderr.write('\n');
  }
}

function checkType(t: string | undefined): void {
  if (t === undefined || (PROVIDER_TYPES as readonly string[]).includes(t)) return;
  const guess = closest(t, PROVIDER_TYPES);
  throw new UsageError(
    `--type ${t}: expected one of ${PROVIDER_TYPES.join(', ')}${guess === null ? '' : ` (did you mean ${guess}?)`}`,
  );
}

function print(views: ProviderView | ProviderView[], output?: string): void {
  if (output === 'json') {
    process.stdout.write(printableJson(views, 2) + '\n');
    return;
  }
  const rows = Array.isArray(views) ? views : [views];
  if (rows.length === 0) {
    process.stdout.write(
      'no providers (create one: carapace provider create NAME --type TYPE --credential-env VAR)\n',
    );
    return;
  }
  process.stdout.write(
    table(
      ['NAME', 'TYPE', 'BASE URL', 'KEY', 'OWNER'],
      rows.map((v) => [v.name, v.type, v.baseUrl, v.fingerprint ?? '(none)', String(v.owner)]),
    ),
  );
}

export function registerProvider(program: Command): void {
  const provider = program
    .command('provider')
    .description('model providers for inference.local (keys sealed by the gateway, never shown)');
  const keyOptions = (c: Command): Command =>
    c
      .option('--credential-env <var>', 'the key is in this environment variable')
      .option('--credential-stdin', 'read the key from standard input (typed unseen at a terminal)');

  outputOption(
    keyOptions(
      provider
        .command('create')
        .description('store a provider')
        .argument('<name>', 'its name (your routes name it as provider: NAME)')
        .requiredOption('--type <type>', PROVIDER_TYPES.join(' | '))
        .option(
          '--base-url <url>',
          "the API's base URL (default: the type's; required for openai-compatible)",
        )
        .option('--owner <uid>', 'for another user (root and carapace-admin)'),
    ),
    ['table', 'json'],
  ).action(async (name: string, o: Record<string, string | boolean | undefined>) => {
    checkType(o.type as string);
    const credential = await readCredential(o as { credentialEnv?: string; credentialStdin?: boolean });
    const client = await GatewayClient.connect();
    const view = await client.call<ProviderView>(
      'POST',
      `/v1/providers${ownerQuery(o.owner as string | undefined)}`,
      {
        name,
        type: o.type,
        baseUrl: o.baseUrl,
        credential,
      },
    );
    print(view, o.output as 'table' | 'json');
  });

  outputOption(
    provider
      .command('list')
      .alias('ls')
      .description('your providers (--all: everyone’s, for root and carapace-admin)')
      .option('--all', "every user's providers"),
    ['table', 'json'],
  ).action(async (o: { all?: boolean; output: 'table' | 'json' }) => {
    const client = await GatewayClient.connect();
    print(await client.call<ProviderView[]>('GET', `/v1/providers${o.all ? '?all=true' : ''}`), o.output);
  });

  outputOption(
    provider
      .command('get')
      .description('one provider (its key’s fingerprint, never the key)')
      .argument('<name>')
      .option('--owner <uid>', "another user's (root and carapace-admin)"),
    ['table', 'json'],
  ).action(async (name: string, o: { owner?: string; output: 'table' | 'json' }) => {
    const client = await GatewayClient.connect();
    print(await client.call<ProviderView>('GET', providerPath(name, o.owner)), o.output);
  });

  outputOption(
    keyOptions(
      provider
        .command('update')
        .description(
          'change a provider’s type, base URL or key (a new type keeps the base URL; from a default service, give the new key)',
        )
        .argument('<name>')
        .option('--type <type>', PROVIDER_TYPES.join(' | '))
        .option('--base-url <url>', "the API's base URL")
        .option('--no-credential', 'remove its key (local model servers that need none)')
        .option('--owner <uid>', "another user's (root and carapace-admin)"),
    ),
    ['table', 'json'],
  ).action(async (name: string, o: Record<string, string | boolean | undefined>) => {
    checkType(o.type as string | undefined);
    const credential = await readCredential(o as { credentialEnv?: string; credentialStdin?: boolean });
    const body: Record<string, unknown> = { type: o.type, baseUrl: o.baseUrl };
    if (o.credential === false) {
      if (credential !== undefined)
        throw new UsageError('--no-credential and a new key: give one or the other');
      body.credential = null;
    } else if (credential !== undefined) body.credential = credential;
    if (Object.values(body).every((v) => v === undefined))
      throw new UsageError(
        'nothing to change: give --type, --base-url, --credential-env, --credential-stdin or --no-credential',
      );
    const client = await GatewayClient.connect();
    print(
      await client.call<ProviderView>('PATCH', providerPath(name, o.owner as string | undefined), body),
      o.output as 'table' | 'json',
    );
  });

  provider
    .command('delete')
    .alias('rm')
    .description('delete a provider (routes that name it become unavailable)')
    .argument('<name>')
    .option('--owner <uid>', "another user's (root and carapace-admin)")
    .action(async (name: string, o: { owner?: string }) => {
      const client = await GatewayClient.connect();
      await client.call('DELETE', providerPath(name, o.owner));
      process.stdout.write(`${name} deleted\n`);
    });

  outputOption(
    provider
      .command('test')
      .description('send it one minimal request: latency and the models it lists')
      .argument('<name>')
      .option('--owner <uid>', "another user's (root and carapace-admin)"),
    ['text', 'json'],
  ).action(async (name: string, o: { owner?: string; output: 'text' | 'json' }) => {
    const client = await GatewayClient.connect();
    const r = await client.call<ProbeView>('POST', providerPath(name, o.owner, '/test'));
    if (o.output === 'json') process.stdout.write(printableJson(r, 2) + '\n');
    else printProbe(name, r);
    if (!r.ok) process.exitCode = 1;
  });
}

export function printProbe(label: string, r: ProbeView): void {
  if (r.ok) {
    const models =
      r.models.length > 0
        ? r.models.slice(0, 20).join(', ') + (r.models.length > 20 ? ', …' : '')
        : 'none listed';
    process.stdout.write(
      `${label}: ok in ${Math.round(r.latencyMs)} ms (status ${r.status}); models: ${models}\n`,
    );
  } else {
    process.stdout.write(
      `${label}: failed${r.status !== null ? ` (status ${r.status})` : ''} after ${Math.round(r.latencyMs)} ms: ${r.error ?? 'unknown error'}\n`,
    );
  }
}
