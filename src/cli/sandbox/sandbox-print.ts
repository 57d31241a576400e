/**
 * How the CLI shows sandboxes the gateway returns: `sandbox list` (a table, wide with more
 * columns), `sandbox get` (a field a line, the reason for its state under it), and a forward's
 * state where it is not what the sandbox's state implies.
 */
import { printable, printableJson } from '../../policy/printable.js';
import { table } from '../terminal.js';

/** A forward as the gateway shows it: whether it listens, and why not (src/gateway/route-params.ts). */
export interface ForwardView {
  hostPort: number;
  sandboxPort: number;
  listening: boolean;
  reason: string | null;
}

/**
 * A forward's state, said only when it is not what its sandbox's state implies (running:
 * listening; stopped: not): a running sandbox's forward that could not be bound.
 */
export function forwardTrouble(f: ForwardView): string {
  return f.reason === null
    ? ''
    : ` (not listening: host port ${f.hostPort} is ${f.reason}; the gateway keeps trying)`;
}

/** A sandbox as the gateway shows it (src/gateway/routes.ts, sandboxView). */
export interface SandboxView {
  name: string;
  id: string;
  owner: number;
  state: string;
  desired: string;
  command: string[];
  workspace: string;
  restart: string;
  labels: Record<string, string>;
  forwards: ForwardView[];
  policyRev: number;
  restarts: number;
  exitCode: number | null;
  reason: string | null;
  createdAt: string;
  updatedAt: string;
  startedAt?: string | null;
  /** When its restart policy starts it again (a restart waiting for its backoff). */
  restartAt?: string | null;
  version: number;
}

function age(iso: string): string {
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  return s < 120
    ? `${s}s`
    : s < 7200
      ? `${Math.round(s / 60)}m`
      : s < 172800
        ? `${Math.round(s / 3600)}h`
        : `${Math.round(s / 86400)}d`;
}

/**
 * The STATE column: a sandbox waiting for its restart's backoff shows as `restarting` (its stored
 * state is the end's: `stopped`, or `failed` when its start failed, which would read as given up).
 */
function listState(v: SandboxView): string {
  const code = v.exitCode !== null ? ` (${v.exitCode})` : '';
  if (v.restartAt) return `restarting${code}`;
  return v.state === 'stopped' ? `stopped${code}` : v.state;
}

export function print(view: SandboxView | SandboxView[], output: string | undefined, wide = false): void {
  if (output === 'json') {
    process.stdout.write(printableJson(view, 2) + '\n');
    return;
  }
  const rows = Array.isArray(view) ? view : [view];
  if (rows.length === 0) {
    process.stdout.write('no sandboxes (create one: carapace sandbox create --name NAME -- CMD)\n');
    return;
  }
  const head = [
    'NAME',
    'STATE',
    'RESTARTS',
    'AGE',
    'COMMAND',
    ...(wide ? ['OWNER', 'ID', 'RESTART', 'FORWARDS', 'WORKSPACE'] : []),
  ];
  process.stdout.write(
    table(
      head,
      rows.map((v) => [
        v.name,
        listState(v),
        String(v.restarts),
        age(v.createdAt),
        v.command.join(' '),
        ...(wide
          ? [
              String(v.owner),
              v.id,
              v.restart,
              v.forwards
                .map(
                  (f) =>
                    `${f.hostPort}→${f.sandboxPort}${f.reason === null ? '' : ` (not listening: ${f.reason})`}`,
                )
                .join(',') || '-',
              v.workspace,
            ]
          : []),
      ]),
    ),
  );
}

/** One sandbox for people: each field on its line, the reason for its state under it. */
export function printDetails(v: SandboxView): void {
  const rows: [string, string][] = [
    ['name', v.name],
    ['id', v.id],
    ['owner', `uid ${v.owner}`],
    ['state', v.exitCode !== null && v.state !== 'running' ? `${v.state} (status ${v.exitCode})` : v.state],
    ...(v.reason ? ([['reason', v.reason]] as [string, string][]) : []),
    ['should run', v.desired === 'running' ? 'yes' : 'no'],
    ['restart', `${v.restart} (${v.restarts} restart${v.restarts === 1 ? '' : 's'} so far)`],
    ['command', v.command.join(' ')],
    ['workspace', v.workspace],
    [
      'forwards',
      v.forwards.map((f) => `127.0.0.1:${f.hostPort} → ${f.sandboxPort}${forwardTrouble(f)}`).join(', ') ||
        '-',
    ],
    ['policy', `revision ${v.policyRev} (carapace policy history ${v.name})`],
    [
      'labels',
      Object.entries(v.labels)
        .map(([k, val]) => `${k}=${val}`)
        .join(', ') || '-',
    ],
    ['created', `${v.createdAt} (${age(v.createdAt)} ago)`],
    ...(v.startedAt ? ([['started', `${v.startedAt} (${age(v.startedAt)} ago)`]] as [string, string][]) : []),
  ];
  const width = Math.max(...rows.map(([k]) => k.length)) + 2;
  for (const [k, val] of rows) process.stdout.write(`${`${k}:`.padEnd(width)}${printable(val)}\n`);
}
