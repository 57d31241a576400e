/**
 * What `carapace term` shows, apart from how: the state the gateway's events keep current (the
 * sandboxes, the last decisions, the pending proposals) and the lines each panel prints, fitted to
 * the terminal's width. Kept free of ink so that it reads (and is tested) as plain data.
 */
import type { OperatorEvent } from '../../../gateway/operator-events.js';
import { printable } from '../../../policy/printable.js';
import type { ProposalView } from '../rules-command.js';

export interface SandboxRow {
  name: string;
  owner: number;
  state: string;
  restarts: number;
  updatedAt: string;
  /** When its current run started (null: not running, or not known). */
  startedAt?: string | null;
  /** When its restart policy starts it again (null or absent: no restart waits). */
  restartAt?: string | null;
  policyRev: number;
}

/** A decision as the live feed sends it (the gateway's type), less what the panel does not show. */
export type Decision = Omit<Extract<OperatorEvent, { type: 'decision' }>, 'type' | 'owner' | 'reason'>;

export const MAX_DECISIONS = 200;

/**
 * One line, cut to `width` columns (an ellipsis marks the cut). What a sandbox chose (its name, a
 * host, a path, a rationale, its output) is made printable first, by the rule of every view
 * (src/policy/printable.ts): a bidi override or a zero-width character would make one line read as
 * another on the operator's screen, where one key approves what it shows.
 */
export function fit(text: string, width: number): string {
  const clean = printable(text);
  return clean.length <= width ? clean : `${clean.slice(0, Math.max(0, width - 1))}…`;
}

function pad(s: string, n: number): string {
  return s.length >= n ? s.slice(0, n) : s + ' '.repeat(n - s.length);
}

export function uptime(row: SandboxRow, now = Date.now()): string {
  if (row.state !== 'running') return '-';
  const since = Date.parse(row.startedAt ?? row.updatedAt);
  const s = Math.max(0, Math.round((now - since) / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d`;
}

/** What /metrics says of one sandbox, keyed `owner/name`; CPU % needs the previous reading. */
export interface Gauges {
  /** When it was read (ms). */
  at: number;
  /** Connections open through the proxy. */
  conns?: number;
  /** CPU seconds so far, and the share of one core since the previous reading (100 = one core). */
  cpuSeconds?: number;
  cpuPercent?: number;
  memoryBytes?: number;
}

/** Per sandbox (`owner/name`), the gauges a /metrics text gives, with CPU % against `previous`. */
export function gaugesFromMetrics(
  text: string,
  now: number,
  previous: ReadonlyMap<string, Gauges> = new Map(),
): Map<string, Gauges> {
  const out = new Map<string, Gauges>();
  const series =
    /^(carapace_proxy_connections|carapace_sandbox_cpu_seconds_total|carapace_sandbox_memory_bytes)\{([^}]*)\} (\S+)/gm;
  for (const m of text.matchAll(series)) {
    const labels = Object.fromEntries([...m[2]!.matchAll(/(\w+)="([^"]*)"/g)].map((l) => [l[1], l[2]]));
    if (labels.sandbox === undefined || labels.owner === undefined) continue;
    const key = `${labels.owner}/${labels.sandbox}`;
    const g = out.get(key) ?? { at: now };
    const value = Number(m[3]);
    if (m[1] === 'carapace_proxy_connections') g.conns = value;
    else if (m[1] === 'carapace_sandbox_memory_bytes') g.memoryBytes = value;
    else {
      g.cpuSeconds = value;
      const before = previous.get(key);
      if (before?.cpuSeconds !== undefined && now > before.at && value >= before.cpuSeconds)
        g.cpuPercent = ((value - before.cpuSeconds) * 100_000) / (now - before.at);
    }
    out.set(key, g);
  }
  return out;
}

/** Bytes in the fewest characters: 812K, 95M, 1.2G. */
export function bytes(n: number): string {
  const units = ['B', 'K', 'M', 'G', 'T'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v < 10 && u > 0 ? v.toFixed(1) : Math.round(v)}${units[u]}`;
}

export function sandboxLines(
  rows: SandboxRow[],
  gauges: ReadonlyMap<string, Gauges>,
  width: number,
): string[] {
  const head = `${pad('NAME', 16)} ${pad('STATE', 10)} ${pad('UPTIME', 7)} ${pad('RESTARTS', 8)} ${pad('CPU', 5)} ${pad('MEM', 6)} ${pad('CONNS', 5)} POLICY`;
  return [
    fit(head, width),
    ...rows.map((r) => {
      const g = gauges.get(`${r.owner}/${r.name}`);
      const cpu = g?.cpuPercent === undefined ? '-' : `${Math.round(g.cpuPercent)}%`;
      const mem = g?.memoryBytes === undefined ? '-' : bytes(g.memoryBytes);
      const conns = g?.conns === undefined ? '-' : String(g.conns);
      return fit(
        `${pad(r.name, 16)} ${pad(r.restartAt ? 'restarting' : r.state, 10)} ${pad(uptime(r), 7)} ${pad(String(r.restarts), 8)} ${pad(cpu, 5)} ${pad(mem, 6)} ${pad(conns, 5)} rev ${r.policyRev}`,
        width,
      );
    }),
  ];
}

export function decisionLine(d: Decision, width: number): string {
  const time = new Date(d.t).toTimeString().slice(0, 8);
  const what =
    d.level === 'request' ? `${d.method} ${d.host}:${d.port}${d.path ?? ''}` : `connect ${d.host}:${d.port}`;
  const bin = d.binary.split('/').pop() ?? '';
  return fit(`${time} ${pad(d.sandbox, 10)} ${d.allowed ? 'allow ' : 'DENIED'} ${what} ${bin}`, width);
}

/**
 * Where a proposal came from: `denial`, a request the policy refused; `agent`, the agent's own
 * suggestion through policy.local (nothing was refused: it asked, with a rationale); `denial+agent`,
 * a refusal the agent then asked about. The operator weighs them differently: a refusal is what the
 * agent did, a suggestion is what it says it wants, in words it chose.
 */
export function proposalOrigin(p: Pick<ProposalView, 'source' | 'rationale'>): string {
  if (p.source === 'agent') return 'agent';
  return p.rationale ? 'denial+agent' : 'denial';
}

export function proposalLine(p: ProposalView, selected: boolean, width: number): string {
  const origin = proposalOrigin(p);
  const badge = origin === 'denial' ? '' : `[${origin}] `;
  const what =
    p.level === 'request'
      ? `${p.method} ${p.host}:${p.port} ${p.pathPattern ?? ''}`
      : `connect ${p.host}:${p.port}`;
  const risk = p.risks.length > 0 ? ` !${p.risks.length}` : '';
  return fit(
    `${selected ? '>' : ' '} ${pad(`#${p.id}`, 5)} ${pad(p.sandbox, 10)} ${badge}${what} ×${p.hits}${risk} ${p.binary.split('/').pop() ?? ''}`,
    width,
  );
}

/**
 * What `a` would approve, under the list: the selected proposal's rule, the agent's rationale when
 * it asked for it, and its first risk note (with how many more). The list's `!N` says only that there are notes; the operator reads these
 * before one key writes the rule.
 */
export function proposalDetail(p: ProposalView, width: number): string[] {
  const lines = [
    fit(`  rule: ${p.rule?.summary ?? 'none, the latest policy allows it (a closes it)'}`, width),
  ];
  // The agent's own words, marked as such: text a sandbox chose, never an instruction to the operator.
  if (p.rationale) lines.push(fit(`  the agent says: ${p.rationale}`, width));
  const [first, ...more] = p.risks;
  if (first !== undefined)
    lines.push(
      fit(`  risk: ${first}${more.length > 0 ? ` (+${more.length} more: rules show ${p.id})` : ''}`, width),
    );
  return lines;
}

/**
 * Which proposal is selected once the list has changed: the same one, by id, wherever it moved
 * (a new denial is listed first, a proposal hit again moves up); if it is gone (decided), the one
 * now at its place. A selection by place alone would let a denial arriving just before a key press
 * turn `a` into the approval of another proposal than the one on screen.
 */
export function selectedIndex(
  list: readonly ProposalView[],
  selection: { id: number | null; index: number },
): number {
  if (list.length === 0) return -1;
  const at = selection.id === null ? -1 : list.findIndex((p) => p.id === selection.id);
  return at >= 0 ? at : Math.min(Math.max(0, selection.index), list.length - 1);
}
