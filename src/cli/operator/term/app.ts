/**
 * `carapace term`: the operator's terminal view (ink), usable over SSH at 80×24. Panels: sandboxes
 * (state, uptime, restarts, CPU, memory, connections open through the proxy, policy revision), the live stream
 * of decisions, and the pending proposals, with keys: ↑/↓ select, a approve, r reject, s approve
 * every proposal without risk notes, l the selected sandbox's log, q quit.
 *
 * Live: one `GET /v1/events` stream tells it of decisions, proposals and sandbox changes as they
 * happen (docs/operator.md). Only the gauges are read from /metrics, every 5 seconds (and once
 * after 1 s, so that CPU, a difference of two readings, shows soon): connections change with every
 * connection, CPU and memory all the time, which no event reports.
 *
 * Written with React.createElement (as `h`) rather than JSX, so that the build needs no JSX step.
 */
import { Box, Text, render, useApp, useInput, useStdout } from 'ink';
import React, { useEffect, useState } from 'react';
import { GatewayClient } from '../../gateway/gateway-client.js';
import type { ProposalView } from '../rules-command.js';
import {
  MAX_DECISIONS,
  gaugesFromMetrics,
  decisionLine,
  fit,
  proposalDetail,
  proposalLine,
  sandboxLines,
  selectedIndex,
  type Decision,
  type Gauges,
  type SandboxRow,
} from './model.js';

const h = React.createElement;

type Event =
  | ({ type: 'decision' } & Decision)
  | { type: 'proposal'; proposal: ProposalView }
  | { type: 'sandbox' }
  | { type: 'hello' }
  | { type: 'dropped'; count: number };

function App({ client }: { client: GatewayClient }): React.ReactElement {
  const { exit } = useApp();
  const stdout = useStdout().stdout as NodeJS.WriteStream;
  const [size, setSize] = useState({ cols: stdout.columns || 80, rows: stdout.rows || 24 });
  const [sandboxes, setSandboxes] = useState<SandboxRow[]>([]);
  const [gauges, setGauges] = useState<Map<string, Gauges>>(new Map());
  const [decisions, setDecisions] = useState<Decision[]>([]);
  const [proposals, setProposals] = useState<ProposalView[]>([]);
  // The selected proposal by id (and the place it was at, for when it is decided and leaves).
  const [selection, setSelection] = useState<{ id: number | null; index: number }>({ id: null, index: 0 });
  const [status, setStatus] = useState('connecting…');
  const [logs, setLogs] = useState<string[] | null>(null);

  useEffect(() => {
    const onResize = () => setSize({ cols: stdout.columns || 80, rows: stdout.rows || 24 });
    stdout.on('resize', onResize);
    return () => void stdout.off('resize', onResize);
  }, [stdout]);

  useEffect(() => {
    let stopped = false;
    const loadSandboxes = () =>
      client
        .call<SandboxRow[]>('GET', '/v1/sandboxes')
        .then(setSandboxes, (e: Error) => setStatus(e.message));
    const loadMetrics = () =>
      client.text('/metrics').then(
        (t) => setGauges((before) => gaugesFromMetrics(t, Date.now(), before)),
        () => undefined,
      );
    void loadSandboxes();
    void loadMetrics();
    void client
      .call<ProposalView[]>('GET', '/v1/proposals?status=pending')
      .then(setProposals, (e: Error) => setStatus(e.message));
    const soon = setTimeout(() => void loadMetrics(), 1_000);
    const gauges = setInterval(() => void loadMetrics(), 5_000);
    void (async () => {
      try {
        for await (const e of client.lines<Event>('/v1/events')) {
          if (stopped) break;
          if (e.type === 'hello') setStatus('live');
          else if (e.type === 'decision') setDecisions((d) => [e, ...d].slice(0, MAX_DECISIONS));
          else if (e.type === 'proposal')
            setProposals((list) => {
              const rest = list.filter((p) => p.id !== e.proposal.id);
              return e.proposal.status === 'pending' ? [e.proposal, ...rest] : rest;
            });
          else if (e.type === 'sandbox') void loadSandboxes();
          else if (e.type === 'dropped') setStatus(`live (${e.count} events dropped: a slow terminal)`);
        }
        setStatus('the gateway closed the stream');
      } catch (err) {
        setStatus(`disconnected: ${(err as Error).message}`);
      }
    })();
    return () => {
      stopped = true;
      clearTimeout(soon);
      clearInterval(gauges);
    };
  }, [client]);

  const selected = selectedIndex(proposals, selection);
  const current = selected >= 0 ? proposals[selected] : undefined;
  // Keep the selection on what is shown: once its proposal is gone, on the one now in its place.
  useEffect(() => {
    if (current && current.id !== selection.id) setSelection({ id: current.id, index: selected });
  }, [current, selected, selection.id]);
  const select = (index: number) => {
    const p = proposals[index];
    if (p) setSelection({ id: p.id, index });
  };
  useInput((input, key) => {
    if (input === 'q' || (key.ctrl && input === 'c')) return exit();
    if (key.upArrow) select(Math.max(0, selected - 1));
    if (key.downArrow) select(Math.min(proposals.length - 1, selected + 1));
    if (input === 'a' && current) {
      setStatus(`approving #${current.id}…`);
      client
        .call<{ outcome: string; revision: number | null }>('POST', `/v1/proposals/${current.id}/approve`, {})
        .then(
          (r) =>
            setStatus(
              r.outcome === 'superseded'
                ? `#${current.id}: already allowed`
                : `#${current.id} approved: policy revision ${r.revision} ${r.outcome}`,
            ),
          (e: Error) => setStatus(e.message),
        );
    }
    if (input === 'r' && current) {
      client.call('POST', `/v1/proposals/${current.id}/reject`, {}).then(
        () => setStatus(`#${current.id} rejected`),
        (e: Error) => setStatus(e.message),
      );
    }
    if (input === 's') {
      client
        .call<{ approved: { outcome: string }[]; skipped: unknown[] }>(
          'POST',
          '/v1/proposals/approve-safe',
          {},
        )
        .then(
          (r) => {
            const closed = r.approved.filter((a) => a.outcome === 'superseded').length;
            setStatus(
              `approved ${r.approved.length - closed}${closed > 0 ? `, closed ${closed} already allowed` : ''}, left ${r.skipped.length} with risk notes`,
            );
          },
          (e: Error) => setStatus(e.message),
        );
    }
    if (input === 'l') {
      if (logs !== null) return setLogs(null);
      const name = current?.sandbox ?? sandboxes[0]?.name;
      if (!name) return;
      void (async () => {
        const lines: string[] = [];
        try {
          for await (const l of client.lines<{ d?: string; b?: string }>(
            `/v1/sandboxes/${encodeURIComponent(name)}/logs?tail=8`,
          ))
            lines.push(`${name}: ${(l.d ?? '(binary)').replace(/\n$/, '')}`);
        } catch (err) {
          lines.push((err as Error).message);
        }
        setLogs(lines.length > 0 ? lines : [`${name}: no output yet`]);
      })();
    }
  });

  const width = Math.max(20, size.cols - 2);
  // 24 rows: title 1, keys 1, three headers 3, sandboxes, decisions, proposals share the rest.
  const free = Math.max(6, size.rows - 6);
  const sbRows = Math.min(sandboxes.length + 1, Math.max(2, Math.floor(free / 3)));
  const propRows = Math.min(Math.max(1, proposals.length), Math.max(2, Math.floor(free / 3)));
  const detail = current ? proposalDetail(current, width) : [];
  const decRows = Math.max(1, free - sbRows - propRows - detail.length);
  const first = Math.max(0, Math.min(selected - propRows + 1, proposals.length - propRows));
  const pending = proposals.length;
  const line = (text: string, color?: string, key?: string | number) =>
    h(Text, { key, color, wrap: 'truncate' }, fit(text, width));
  return h(
    Box,
    { flexDirection: 'column', width: size.cols, height: size.rows - 1 },
    line(
      `Carapace term · ${sandboxes.length} sandbox${sandboxes.length === 1 ? '' : 'es'} · ${pending} pending · ${status}`,
      'cyan',
    ),
    h(Text, { bold: true }, fit('SANDBOXES', width)),
    ...sandboxLines(sandboxes, gauges, width)
      .slice(0, sbRows)
      .map((l, i) => line(l, i === 0 ? 'gray' : undefined, `s${i}`)),
    h(Text, { bold: true }, fit(logs === null ? 'DECISIONS (live)' : 'LOG (l closes)', width)),
    ...(logs ?? decisions.map((d) => decisionLine(d, width)))
      .slice(0, decRows)
      .map((l, i) =>
        line(l, logs === null && decisions[i] && !decisions[i]!.allowed ? 'red' : undefined, `d${i}`),
      ),
    h(Text, { bold: true }, fit(`PROPOSALS (${pending})`, width)),
    ...(proposals.length === 0
      ? [line('  none pending', 'gray', 'p-none')]
      : proposals
          .slice(first, first + propRows)
          .map((p, i) =>
            line(
              proposalLine(p, first + i === selected, width),
              first + i === selected ? 'yellow' : undefined,
              `p${p.id}`,
            ),
          )),
    ...detail.map((l, i) => line(l, i === 0 ? undefined : 'yellow', `pd${i}`)),
    h(Box, { flexGrow: 1 }),
    line('↑↓ select  a approve  r reject  s approve-all-safe  l logs  q quit', 'gray', 'keys'),
  );
}

/** Runs the view until q; resolves when it has closed. */
export async function runTerm(): Promise<void> {
  const client = await GatewayClient.connect();
  // Interactive even where CI or CONTINUOUS_INTEGRATION is set: ink would otherwise draw only the
  // last frame, at exit, and `carapace term` has already checked that it has a terminal.
  const app = render(h(App, { client }), { exitOnCtrlC: false, interactive: true });
  await app.waitUntilExit();
}
