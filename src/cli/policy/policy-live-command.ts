/**
 * `carapace policy set|update|get|history|rollback NAME`: the policy of a sandbox the gateway
 * holds, changed live. Each change is a revision the gateway stores (author, time, hash, diff);
 * network and inference sections apply to a running sandbox at once, a static section needs a
 * stopped sandbox or `--restart` (docs/policy.md, "Live changes"; docs/gateway.md, "Policy
 * revisions"). Tables for people, `-o json` for scripts.
 */
import type { Command } from 'commander';
import { existsSync, readFileSync } from 'node:fs';
import { UsageError } from '../errors.js';
import { outputOption } from '../output-option.js';
import { GatewayClient, printedPolicyProblems, readCallerFile } from '../gateway/gateway-client.js';
import { addOperationOptions, type OpsOptions } from './policy-ops-command.js';
import { printable, printableJson } from '../../policy/printable.js';
import { withSpinner } from '../terminal.js';

/** A revision as the gateway shows it (src/gateway/policy/policy-routes.ts). */
interface RevisionView {
  rev: number;
  hash: string;
  author: number;
  createdAt: string;
  action: 'create' | 'set' | 'update' | 'rollback';
  effect: 'live' | 'start' | 'restart';
  diff: string[];
  sections: string[];
  restores: number | null;
  source: 'create' | 'set' | 'update' | 'rollback' | 'approve' | 'inference';
  proposal: number | null;
  current: boolean;
  text?: string;
}

interface ChangeResult {
  outcome: 'applied' | 'stored' | 'restarted' | 'unchanged';
  revision: RevisionView;
  generation: number | null;
  closedTunnels: number;
}

interface Common {
  owner?: string;
  /** Checked by commander before the action runs (output-option.ts). */
  output: string;
}

interface ChangeFlags extends Common {
  baseRev?: string;
  restart?: boolean;
}

const policyPath = (name: string, suffix: string, query: URLSearchParams) =>
  `/v1/sandboxes/${encodeURIComponent(name)}/policy${suffix}${query.size ? `?${query}` : ''}`;

function ownerQuery(o: Common): URLSearchParams {
  const q = new URLSearchParams();
  if (o.owner !== undefined) q.set('owner', String(wholeNumber(o.owner, '--owner')));
  return q;
}

function wholeNumber(text: string, flag: string, min = 0): number {
  const n = Number(text);
  if (!/^\d+$/.test(text) || n < min)
    throw new UsageError(`${flag} ${text}: expected a whole number${min ? ` ≥ ${min}` : ''}`);
  return n;
}

function changeBody(o: ChangeFlags): { baseRev?: number; restart: boolean } {
  return {
    ...(o.baseRev !== undefined ? { baseRev: wholeNumber(o.baseRev, '--base-rev', 1) } : {}),
    restart: o.restart === true,
  };
}

/**
 * Sends a change and prints what came of it. A policy the gateway refuses as invalid is printed
 * one problem per line (`file:line:col: message`, `file` being `shownAs` when the change was a
 * file), exit 2; every other refusal is the gateway's one line.
 */
async function sendChange(
  name: string,
  method: string,
  path: string,
  body: unknown,
  o: Common,
  shownAs?: string,
): Promise<void> {
  const client = await GatewayClient.connect();
  let result: ChangeResult;
  try {
    result = await withSpinner(`changing the policy of ${name}`, () =>
      client.call<ChangeResult>(method, path, body),
    );
  } catch (err) {
    if (printedPolicyProblems(err, `${name}.yaml`, shownAs)) return;
    throw err;
  }
  if (o.output === 'json') {
    process.stdout.write(printableJson(result, 2) + '\n');
    return;
  }
  const r = result.revision;
  const line =
    result.outcome === 'unchanged'
      ? `${name}: policy unchanged (revision ${r.rev})`
      : result.outcome === 'applied'
        ? // The words of `rules approve` and of `policy history` (EFFECT below) for the same effect.
          `${name}: policy revision ${r.rev}, applied live` +
          (result.generation !== null
            ? ` (network policy generation ${result.generation}` +
              (result.closedTunnels > 0
                ? `; ${result.closedTunnels} tunnel${result.closedTunnels === 1 ? '' : 's'} it no longer allows closed`
                : '') +
              ')'
            : '')
        : result.outcome === 'stored'
          ? `${name}: policy revision ${r.rev} stored; the sandbox is not running and starts with it`
          : `${name}: policy revision ${r.rev} stored, and the sandbox restarted with it`;
  process.stdout.write(`${line}\n`);
  for (const d of result.outcome === 'unchanged' ? [] : r.diff) process.stdout.write(`  ${printable(d)}\n`);
}

/** The flags' operations in apply-ops's fixed order, as the API takes them (specs checked there). */
function wireOperations(o: OpsOptions): unknown[] {
  if ((o.binary ?? []).length > 0 && (o.addEndpoint ?? []).length === 0) {
    throw new UsageError('--binary applies to --add-endpoint; add one, or drop --binary');
  }
  const key = o.policyKey === undefined ? {} : { policyKey: o.policyKey };
  const ops: unknown[] = [
    ...(o.removePreset ?? []).map((p) => ({
      op: 'remove-preset',
      preset: presetRef(p),
      force: o.force === true,
    })),
    ...(o.addPreset ?? []).map((p) => ({
      op: 'add-preset',
      preset: presetRef(p),
      replace: o.replace === true,
    })),
    ...(o.removeEndpoint ?? []).map((endpoint) => ({ op: 'remove-endpoint', endpoint, ...key })),
    ...(o.addEndpoint ?? []).map((endpoint) => ({
      op: 'add-endpoint',
      endpoint,
      binaries: o.binary ?? [],
      ...key,
    })),
    ...(o.addRule ?? []).map((rule) => ({ op: 'add-rule', kind: 'allow', rule, ...key })),
    ...(o.addDenyRule ?? []).map((rule) => ({ op: 'add-rule', kind: 'deny', rule, ...key })),
    ...(o.removeRule ?? []).map((rule) => ({ op: 'remove-rule', kind: 'allow', rule, ...key })),
    ...(o.removeDenyRule ?? []).map((rule) => ({ op: 'remove-rule', kind: 'deny', rule, ...key })),
  ];
  if (ops.length === 0)
    throw new UsageError(
      'policy update needs at least one operation (--add-endpoint, --add-preset, … see --help)',
    );
  return ops;
}

/** A preset argument: a file's text (read here, as the caller), or a built-in name for the gateway. */
function presetRef(arg: string): { name: string } | { text: string; file: string } {
  const looksLikeFile = arg.includes('/') || arg.endsWith('.yaml') || arg.endsWith('.yml');
  if (!looksLikeFile || !existsSync(arg)) return { name: arg };
  return { text: readCallerFile(arg, 'preset'), file: arg };
}

/** The user name of a uid, from the host's passwd file (the uid alone when there is none). */
function userName(uid: number): string {
  try {
    for (const line of readFileSync('/etc/passwd', 'utf8').split('\n')) {
      const [name, , id] = line.split(':');
      if (name && Number(id) === uid && id !== '') return `uid ${uid} (${name})`;
    }
  } catch {
    // no passwd file to read: the uid says it
  }
  return `uid ${uid}`;
}

function describeAction(r: RevisionView): string {
  if (r.source === 'approve' && r.proposal !== null) return `approve of proposal ${r.proposal}`;
  if (r.source === 'inference') return `inference set`;
  if (r.action === 'rollback' && r.restores !== null) return `rollback to ${r.restores}`;
  return r.action;
}

const EFFECT = { live: 'applied live', start: 'at start', restart: 'by a restart' } as const;

function printHistory(list: RevisionView[]): void {
  for (const r of [...list].reverse()) {
    const time = r.createdAt.replace(/\.\d+Z$/, 'Z');
    process.stdout.write(
      `rev ${r.rev}${r.current ? ' (current)' : ''}  ${time}  ${userName(r.author)}  ${describeAction(r)}, ${EFFECT[r.effect]}  sha256:${r.hash.slice(0, 12)}\n`,
    );
    if (r.action === 'create') process.stdout.write('  the policy the sandbox was created with\n');
    else if (r.diff.length === 0) process.stdout.write('  no change to the policy (comments or layout)\n');
    for (const d of r.diff) process.stdout.write(`  ${printable(d)}\n`);
  }
}

export function registerPolicyLive(policy: Command): void {
  const changeOptions = (c: Command) =>
    outputOption(
      c
        .option(
          '--base-rev <n>',
          'refuse the change if revision N is no longer the latest (someone changed it since)',
        )
        .option(
          '--restart',
          'if the change needs it (a static section of a running sandbox), store it and restart the sandbox',
        )
        .option('--owner <uid>', "another user's sandbox (root and carapace-admin)"),
      ['text', 'json'],
    );

  changeOptions(
    policy
      .command('set')
      .description("replace a sandbox's policy; network and inference apply at once to a running sandbox")
      .argument('<name>', 'the sandbox')
      .argument('<file>', 'the new policy'),
  ).action(async (name: string, file: string, o: ChangeFlags) => {
    const body = { policy: readCallerFile(file, 'policy'), ...changeBody(o) };
    await sendChange(name, 'PUT', policyPath(name, '', ownerQuery(o)), body, o, file);
  });

  changeOptions(
    addOperationOptions(
      policy
        .command('update')
        .description("edit a sandbox's policy by operations (as apply-ops), applied like set")
        .argument('<name>', 'the sandbox'),
    ),
  ).action(async (name: string, o: ChangeFlags & OpsOptions) => {
    const body = { operations: wireOperations(o), ...changeBody(o) };
    await sendChange(name, 'POST', policyPath(name, '/operations', ownerQuery(o)), body, o);
  });

  changeOptions(
    policy
      .command('rollback')
      .description('a new revision with the text of revision N, applied like set (history is kept)')
      .argument('<name>', 'the sandbox')
      .requiredOption('--to <n>', 'the revision to restore'),
  ).action(async (name: string, o: ChangeFlags & { to: string }) => {
    const body = { to: wholeNumber(o.to, '--to', 1), ...changeBody(o) };
    await sendChange(name, 'POST', policyPath(name, '/rollback', ownerQuery(o)), body, o);
  });

  outputOption(
    policy
      .command('get')
      .description("print a sandbox's policy (the latest revision, or --rev N)")
      .argument('<name>', 'the sandbox')
      .option('--rev <n>', 'an earlier revision')
      .option('--owner <uid>', "another user's sandbox (root and carapace-admin)"),
    ['yaml', 'json'],
    'json: the revision with its text',
  ).action(async (name: string, o: Common & { rev?: string }) => {
    const q = ownerQuery(o);
    if (o.rev !== undefined) q.set('rev', String(wholeNumber(o.rev, '--rev', 1)));
    const client = await GatewayClient.connect();
    const r = await client.call<RevisionView>('GET', policyPath(name, '', q));
    if (o.output === 'json') process.stdout.write(printableJson(r, 2) + '\n');
    else process.stdout.write(r.text ?? '');
  });

  outputOption(
    policy
      .command('history')
      .description(
        "every revision of a sandbox's policy, newest first: author, time, source (an approval names its proposal), hash and diff",
      )
      .argument('<name>', 'the sandbox')
      .option('--owner <uid>', "another user's sandbox (root and carapace-admin)"),
    ['table', 'json'],
    'json for scripts (oldest first)',
  ).action(async (name: string, o: Common) => {
    const client = await GatewayClient.connect();
    const list = await client.call<RevisionView[]>('GET', policyPath(name, '/revisions', ownerQuery(o)));
    if (o.output === 'json') process.stdout.write(printableJson(list, 2) + '\n');
    else printHistory(list);
  });
}
