/**
 * `carapace rules list|show|approve|reject|approve-all|history`: the proposals the gateway made of
 * its sandboxes' denials (docs/operator.md). Approving writes a policy revision, applied live;
 * rejecting keeps a proposal closed, for good or for a quiet period. Tables for people, `-o json`
 * for scripts.
 */
import type { Command } from 'commander';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import { METHOD_PATTERN } from '../../policy/index.js';
import { UsageError } from '../errors.js';
import { GatewayClient } from '../gateway/gateway-client.js';
import { outputOption } from '../output-option.js';
import type { ProposalView } from '../../gateway/proposals/proposal-views.js';
import type { ApprovalResult } from '../../gateway/proposals/proposals.js';
import { printable, printableJson } from '../../policy/printable.js';
import { table } from '../terminal.js';
import { proposalOrigin } from './term/model.js';

/** A proposal and an approval as the gateway's API answers them: the gateway's own types. */
export type { ProposalView } from '../../gateway/proposals/proposal-views.js';

interface Common {
  owner?: string;
  all?: boolean;
  /** Checked by commander before the action runs (output-option.ts). */
  output: 'table' | 'json';
}

/** Every `rules` command prints a table (or a line), or with `-o json` what the API answered. */
const FORMATS = ['table', 'json'] as const;

/** `1h`, `30m`, `2d`, `90s`: seconds. */
export function parseDuration(text: string, flag: string): number {
  const m = /^(\d+)([smhd])$/.exec(text.trim());
  const n = m ? Number(m[1]) * { s: 1, m: 60, h: 3600, d: 86400 }[m[2] as 's' | 'm' | 'h' | 'd'] : 0;
  if (!m || n < 1 || n > 10 * 365 * 86400)
    throw new UsageError(
      `${flag} ${text}: expected a duration such as 90s, 30m, 1h or 7d (at most 10 years)`,
    );
  return n;
}

function proposalId(text: string): number {
  if (!/^\d+$/.test(text) || Number(text) < 1)
    throw new UsageError(`${text}: a proposal id is a number (carapace rules list shows them)`);
  return Number(text);
}

function ownerOf(o: Common): number | undefined {
  if (o.owner === undefined) return undefined;
  if (!/^\d+$/.test(o.owner)) throw new UsageError(`--owner ${o.owner}: expected a uid`);
  return Number(o.owner);
}

function listPath(status: string, name: string | undefined, o: Common): string {
  const q = new URLSearchParams({ status });
  if (name !== undefined) q.set('sandbox', name);
  const owner = ownerOf(o);
  if (owner !== undefined) q.set('owner', String(owner));
  if (o.all) q.set('all', 'true');
  return `/v1/proposals?${q}`;
}

/** What was denied, in one line: `GET api.x.com:443 /v1/**` or `connect api.x.com:443`. */
export function whatWasDenied(p: ProposalView): string {
  return p.level === 'request'
    ? `${p.method} ${p.host}:${p.port} ${p.pathPattern ?? ''}`
    : `connect ${p.host}:${p.port}`;
}

export function ago(iso: string, now = Date.now()): string {
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

/** `rules show`'s words for where a proposal came from (term/model.ts, proposalOrigin). */
const ORIGIN_TEXT: Record<string, string> = {
  denial: 'a denial: the policy refused what the agent did',
  agent: 'the agent, through policy.local: it asked for this (nothing was refused)',
  'denial+agent': 'a denial, which the agent then asked about through policy.local',
};

function printList(list: ProposalView[]): void {
  if (list.length === 0) {
    process.stdout.write('no pending proposals\n');
    return;
  }
  process.stdout.write(
    table(
      ['ID', 'SANDBOX', 'FROM', 'HITS', 'LAST', 'DENIED', 'BINARY', 'RULE', 'RISKS'],
      list.map((p) => [
        String(p.id),
        p.sandbox,
        proposalOrigin(p),
        String(p.hits),
        ago(p.lastSeen),
        whatWasDenied(p),
        p.binary || '?',
        p.rule?.summary ?? '(allowed now)',
        p.risks.length === 0 ? '-' : String(p.risks.length),
      ]),
    ),
  );
}

function printOne(p: ProposalView): void {
  const lines = [
    `proposal ${p.id}: ${p.status}`,
    `  from      ${ORIGIN_TEXT[proposalOrigin(p)] ?? proposalOrigin(p)}`,
    `  sandbox   ${p.sandbox} (policy revision ${p.policyRev} when last denied)`,
    `  denied    ${whatWasDenied(p)}, ${p.hits} time${p.hits === 1 ? '' : 's'}, first ${p.firstSeen}, last ${p.lastSeen}`,
    `  binary    ${p.binary || '(unknown)'}${p.ancestors.length ? ` ← ${p.ancestors.join(' ← ')}` : ''}`,
    ...p.samples.map((s) => `  sample    ${s.t} ${s.method ?? ''} ${s.path ?? ''}`),
    ...(p.rationale ? [`  rationale ${p.rationale} (the agent's words)`] : []),
    `  rule      ${p.rule?.summary ?? 'none: the latest policy allows it'}`,
    ...p.risks.map((r) => `  risk      ${r}`),
    ...(p.outcome ? [`  outcome   ${p.outcome}`] : []),
  ];
  process.stdout.write(lines.map(printable).join('\n') + '\n');
}

function json(v: unknown): void {
  process.stdout.write(printableJson(v, 2) + '\n');
}

/**
 * The comment lines above the rule in the editor. What the sandbox chose (its binary's path, the
 * host and path it asked for) is escaped: a newline in a binary's name would otherwise be a YAML
 * line of its own, below the `#`, in the file the operator saves to approve.
 */
export function editorHead(p: ProposalView, r: NonNullable<ProposalView['rule']>): string[] {
  return [
    `# Proposal ${p.id} for sandbox ${p.sandbox}: ${whatWasDenied(p)} by ${p.binary || 'an unknown binary'}`,
    `# ${r.kind === 'request' ? `An allow rule on network policy "${r.policyKey}".` : `A new network policy entry "${r.policyKey}".`}`,
    ...p.risks.map((x) => `# risk: ${x}`),
    ...(r.kind === 'endpoint'
      ? ['# An empty binaries list ([]) lets every program in the sandbox use the endpoint.']
      : []),
    '# Save to approve this rule; delete every line to cancel.',
  ].map(printable);
}

/** The rule in an editor: the fields the operator may change, as YAML; null when left unchanged. */
function editRule(p: ProposalView): Record<string, unknown> | null {
  if (p.status === 'approved' || p.status === 'superseded')
    throw new UsageError(`proposal ${p.id} is already ${p.status}: carapace rules history`);
  if (!p.rule) throw new UsageError(`proposal ${p.id} has no rule to edit: the latest policy allows it`);
  const r = p.rule;
  const fields: Record<string, unknown> =
    r.kind === 'request'
      ? { host: r.host, port: r.port, method: r.method, path: r.path }
      : { host: r.host, port: r.port, binaries: r.binaries };
  const head = editorHead(p, r);
  const dir = mkdtempSync(join(tmpdir(), 'carapace-rule-'));
  const file = join(dir, `proposal-${p.id}.yaml`);
  try {
    writeFileSync(file, `${head.join('\n')}\n${stringify(fields)}`, { mode: 0o600 });
    const editor = (process.env.VISUAL || process.env.EDITOR || 'vi').split(/\s+/).filter(Boolean);
    const r2 = spawnSync(editor[0]!, [...editor.slice(1), file], { stdio: 'inherit' });
    if (r2.error || r2.status !== 0)
      throw new UsageError(
        `the editor (${editor.join(' ')}) failed: ${r2.error?.message ?? `exit ${r2.status}`}`,
      );
    const text = readFileSync(file, 'utf8');
    if (text.replace(/#.*$/gm, '').trim() === '') return null;
    let edited: unknown;
    try {
      edited = parse(text);
    } catch (err) {
      const first = (err as Error).message.split('\n')[0]!.replace(/:\s*$/, '');
      throw new UsageError(`the edited rule is not YAML: ${first}`);
    }
    if (typeof edited !== 'object' || edited === null || Array.isArray(edited))
      throw new UsageError('the edited rule must be a map of host, port, and binaries or method and path');
    const known = new Set(Object.keys(fields));
    for (const k of Object.keys(edited)) {
      if (!known.has(k))
        throw new UsageError(`the edited rule has "${k}": only ${[...known].join(', ')} may change`);
    }
    return checkEdit(edited as Record<string, unknown>);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * The edited fields' shapes, checked here so that a slip reads as what it is ("the edited rule's
 * port …"), not as the API's field path. What the policy makes of them (a host pattern, an endpoint
 * the rule must sit on) the gateway checks, and says in the same words.
 */
function checkEdit(e: Record<string, unknown>): Record<string, unknown> {
  const bad = (what: string) => new UsageError(`the edited rule's ${what}`);
  const show = (v: unknown) => JSON.stringify(v) ?? String(v);
  if ('host' in e && (typeof e.host !== 'string' || e.host.trim() === ''))
    throw bad(`host ${show(e.host)}: expected a host name such as api.example.com`);
  if ('port' in e && (!Number.isInteger(e.port) || (e.port as number) < 1 || (e.port as number) > 65535))
    throw bad(`port ${show(e.port)}: expected a TCP port, 1 to 65535`);
  if (
    'binaries' in e &&
    (!Array.isArray(e.binaries) || e.binaries.some((b) => typeof b !== 'string' || !b.startsWith('/')))
  )
    throw bad(`binaries ${show(e.binaries)}: expected a list of absolute paths, such as [/usr/bin/curl]`);
  if ('method' in e && (typeof e.method !== 'string' || !METHOD_PATTERN.test(e.method)))
    throw bad(`method ${show(e.method)}: expected an HTTP method such as GET or M-SEARCH, or *`);
  if ('path' in e && (typeof e.path !== 'string' || !(e.path.startsWith('/') || e.path === '**')))
    throw bad(`path ${show(e.path)}: expected a path starting with /, such as /v1/**`);
  return e;
}

function printApproval(a: ApprovalResult): void {
  const p = a.proposal;
  if (a.outcome === 'superseded') {
    process.stdout.write(`proposal ${p.id}: nothing to approve, ${p.outcome}\n`);
    return;
  }
  process.stdout.write(
    `proposal ${p.id} approved: ${printable(p.outcome ?? '')}${a.outcome === 'applied' ? ', applied live' : ''}\n`,
  );
  // An edit can widen the rule (binaries [], a wildcard): said after the fact, as for an unedited one.
  for (const r of a.risks ?? []) process.stdout.write(`  risk: ${printable(r)}\n`);
}

export function registerRules(program: Command): void {
  const rules = program
    .command('rules')
    .description('proposals made of denials: approve them into the policy (live), or reject them');
  const listing = (c: Command) =>
    outputOption(
      c
        .option('--owner <uid>', "another user's sandboxes (root and carapace-admin)")
        .option('--all', "every user's sandboxes (root and carapace-admin)"),
      FORMATS,
    );

  listing(
    rules
      .command('list')
      .description(
        'pending proposals, newest first: what was denied, how often, the rule that would allow it',
      )
      .argument('[name]', 'only this sandbox'),
  ).action(async (name: string | undefined, o: Common) => {
    const client = await GatewayClient.connect();
    const list = await client.call<ProposalView[]>('GET', listPath('pending', name, o));
    if (o.output === 'json') json(list);
    else printList(list);
  });

  outputOption(
    rules
      .command('show')
      .description('one proposal: samples, binary and its parents, the rule and its risks')
      .argument('<id>', 'the proposal'),
    FORMATS,
  ).action(async (id: string, o: Common) => {
    const n = proposalId(id);
    const client = await GatewayClient.connect();
    const p = await client.call<ProposalView>('GET', `/v1/proposals/${n}`);
    if (o.output === 'json') json(p);
    else printOne(p);
  });

  outputOption(
    rules
      .command('approve')
      .description(
        'approve: its rule becomes a policy revision, applied live (--edit: change the rule first)',
      )
      .argument('<id>', 'the proposal')
      .option('--edit', 'edit the rule in $VISUAL or $EDITOR before approving'),
    FORMATS,
  ).action(async (id: string, o: Common & { edit?: boolean }) => {
    const n = proposalId(id);
    const client = await GatewayClient.connect();
    let body: { rule?: Record<string, unknown> } = {};
    if (o.edit) {
      const edited = editRule(await client.call<ProposalView>('GET', `/v1/proposals/${n}`));
      if (edited === null) {
        process.stdout.write(`proposal ${n}: not approved (the rule was emptied)\n`);
        return;
      }
      body = { rule: edited };
    }
    const a = await client.call<ApprovalResult>('POST', `/v1/proposals/${n}/approve`, body);
    if (o.output === 'json') json(a);
    else printApproval(a);
  });

  outputOption(
    rules
      .command('reject')
      .description('reject: it stays closed however often the agent retries (for good, or --for a while)')
      .argument('<id>', 'the proposal')
      .option('--for <duration>', 'a quiet period (90s, 30m, 1h, 7d) after which it may come back'),
    FORMATS,
  ).action(async (id: string, o: Common & { for?: string }) => {
    const n = proposalId(id);
    const body = o.for === undefined ? {} : { forSeconds: parseDuration(o.for, '--for') };
    const client = await GatewayClient.connect();
    const p = await client.call<ProposalView>('POST', `/v1/proposals/${n}/reject`, body);
    if (o.output === 'json') json(p);
    else
      process.stdout.write(
        `proposal ${p.id} rejected${p.quietUntil ? ` until ${p.quietUntil}` : ' (for good)'}: ${whatWasDenied(p)}\n`,
      );
  });

  outputOption(
    rules
      .command('approve-all')
      .description('approve every pending proposal without risk notes (--safe is required)')
      .argument('[name]', 'only this sandbox')
      .option('--safe', 'only proposals without risk notes (wildcards, private targets, write methods, …)')
      .option('--owner <uid>', "another user's sandboxes (root and carapace-admin)"),
    FORMATS,
  ).action(async (name: string | undefined, o: Common & { safe?: boolean }) => {
    if (!o.safe)
      throw new UsageError(
        'approve-all approves only proposals without risk notes: repeat with --safe (approve the others one by one)',
      );
    const client = await GatewayClient.connect();
    const owner = ownerOf(o);
    const r = await client.call<{ approved: ApprovalResult[]; skipped: ProposalView[] }>(
      'POST',
      '/v1/proposals/approve-safe',
      { ...(name !== undefined ? { sandbox: name } : {}), ...(owner !== undefined ? { owner } : {}) },
    );
    if (o.output === 'json') return json(r);
    for (const a of r.approved) printApproval(a);
    for (const p of r.skipped)
      process.stdout.write(
        `proposal ${p.id} left pending (${p.risks.length} risk note${p.risks.length === 1 ? '' : 's'}): ${printable(whatWasDenied(p))}\n`,
      );
    if (r.approved.length === 0 && r.skipped.length === 0) process.stdout.write('no pending proposals\n');
  });

  listing(
    rules
      .command('history')
      .description('decided proposals, newest first: who approved or rejected what, and the revision')
      .argument('[name]', 'only this sandbox'),
  ).action(async (name: string | undefined, o: Common) => {
    const client = await GatewayClient.connect();
    const list = await client.call<ProposalView[]>('GET', listPath('decided', name, o));
    if (o.output === 'json') return json(list);
    if (list.length === 0) return void process.stdout.write('no decided proposals\n');
    process.stdout.write(
      table(
        ['ID', 'SANDBOX', 'STATUS', 'WHEN', 'BY', 'DENIED', 'HITS', 'OUTCOME'],
        list.map((p) => [
          String(p.id),
          p.sandbox,
          p.status,
          p.decidedAt ? ago(p.decidedAt) : '',
          p.decidedBy === null ? '' : `uid ${p.decidedBy}`,
          whatWasDenied(p),
          String(p.hits),
          p.outcome ?? '',
        ]),
      ),
    );
  });
}
