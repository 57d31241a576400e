/**
 * Operator in the loop, measured end to end against a real `carapace gateway run` whose sandbox's
 * agent (python, through the gateway's proxy) asks for a new path each round:
 *
 * - denial → proposal visible: from the proxy's refusal (the audit event's time, which is the
 *   proposal's firstSeen) to the moment the proposal reaches a client of the gateway's live feed
 *   (`GET /v1/events`, what `carapace term` reads), target p50 ≤ 500 ms; baseline: the same
 *   refusal reaching the same feed as a decision (the audit stream with no proposal step);
 * - approval → the same request passes: from the bench sending `POST /v1/proposals/N/approve` to
 *   the agent's first 200 for the request it kept retrying (every 5 ms), target p50 ≤ 100 ms;
 *   baseline: one allowed request of the same agent through the proxy (its own round trip).
 *
 * Both clocks are this host's (the agent writes Date-comparable milliseconds).
 */
import { once } from 'node:events';
import { chmodSync, existsSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GatewayClient } from '../src/cli/gateway/gateway-client.js';
import { stateDirs } from '../src/sandbox/state-dirs.js';
import { percentiles, type BenchModule, type BenchRow } from './framework.js';
import { startGateway } from './gateway.js';

const ROUNDS = 30;

/** Fetches the URL in /sandbox/go-N until it answers 200, then writes when, and how long that request took. */
const AGENT = [
  'import os, time, urllib.request as u',
  'n = 0',
  'while True:',
  '    n += 1',
  '    go = f"/sandbox/go-{n}"',
  '    while not os.path.exists(go): time.sleep(0.002)',
  '    url = open(go).read().strip()',
  '    while True:',
  '        t = time.time()',
  '        try:',
  '            u.urlopen(url, timeout=10).read(); break',
  '        except Exception:',
  '            time.sleep(0.005)',
  '    done = time.time()',
  '    open(f"/sandbox/ok-{n}.tmp", "w").write(f"{done * 1000} {(done - t) * 1000}")',
  '    os.rename(f"/sandbox/ok-{n}.tmp", f"/sandbox/ok-{n}")',
].join('\n');

interface Waiter {
  match: (e: FeedEvent) => boolean;
  resolve: (at: number) => void;
}
type FeedEvent = {
  type: string;
  t?: number;
  allowed?: boolean;
  path?: string;
  proposal?: { id: number; status: string; firstSeen: string; samples: { path?: string }[] };
};

async function run(): Promise<BenchRow[]> {
  const home = mkdtempSync(join(tmpdir(), 'carapace-bench-'));
  chmodSync(home, 0o711);
  const upstream: Server = createServer((_req, res) => res.end('ok'));
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  const port = (upstream.address() as AddressInfo).port;
  const gw = await startGateway(home, [
    '--resolve',
    `up.test=127.0.0.1`,
    '--allow-local',
    `127.0.0.1:${port}`,
  ]);
  const client = new GatewayClient({
    socket: join(home, 'run', 'gateway.sock'),
    own: true,
    dirs: stateDirs({ CARAPACE_HOME: home }),
  });
  const feedAbort = { stop: false };
  try {
    const view = await client.call<{ workspace: string }>('POST', '/v1/sandboxes', {
      name: 'bench',
      command: ['python3', '-c', AGENT],
      policy: `version: 1
filesystem_policy: { read_only: [/usr, /lib, /lib64, /bin, /etc], read_write: [/sandbox, /tmp] }
network_policies:
  up:
    name: up
    endpoints:
      - host: up.test
        port: ${port}
        protocol: rest
        rules: [ { allow: { method: GET, path: "/warm/**" } } ]
`,
    });
    // The live feed, read as a client would, every event timestamped on arrival.
    const waiters = new Set<Waiter>();
    void (async () => {
      try {
        for await (const e of client.lines<FeedEvent>('/v1/events')) {
          const at = Date.now();
          for (const w of waiters)
            if (w.match(e)) {
              waiters.delete(w);
              w.resolve(at);
            }
          if (feedAbort.stop) break;
        }
      } catch {
        // the gateway stopped: the feed ends
      }
    })();
    const next = (match: (e: FeedEvent) => boolean) =>
      new Promise<number>((resolve) => waiters.add({ match, resolve }));
    let n = 0;
    const ask = (path: string) => {
      n++;
      const go = join(view.workspace, `go-${n}`);
      writeFileSync(`${go}.tmp`, `http://up.test:${port}${path}\n`);
      chmodSync(`${go}.tmp`, 0o644);
      renameSync(`${go}.tmp`, go);
      return n;
    };
    const ok = async (i: number): Promise<{ at: number; requestMs: number }> => {
      const file = join(view.workspace, `ok-${i}`);
      while (!existsSync(file)) await new Promise((r) => setTimeout(r, 1));
      const [at, requestMs] = readFileSync(file, 'utf8').split(' ').map(Number);
      return { at: at!, requestMs: requestMs! };
    };
    await ok(ask('/warm/up'));

    const toProposal: number[] = [];
    const toDecision: number[] = [];
    const toPass: number[] = [];
    const oneRequest: number[] = [];
    for (let r = 0; r < ROUNDS + 2; r++) {
      const path = `/round${r}/item`;
      const decision = next((e) => e.type === 'decision' && e.allowed === false && e.path === path);
      let proposalEvent: FeedEvent | undefined;
      const proposalSeen = next((e) => {
        if (e.type === 'proposal' && e.proposal!.samples.some((s) => s.path === path)) proposalEvent = e;
        return e.type === 'proposal' && e.proposal!.samples.some((s) => s.path === path);
      });
      const i = ask(path);
      const [decisionAt, proposalAt] = await Promise.all([decision, proposalSeen]);
      const firstSeen = Date.parse(proposalEvent!.proposal!.firstSeen);
      const t0 = Date.now();
      await client.call('POST', `/v1/proposals/${proposalEvent!.proposal!.id}/approve`, {});
      const passed = await ok(i);
      // Warm-up rounds are left out.
      if (r < 2) continue;
      toProposal.push(proposalAt - firstSeen);
      toDecision.push(decisionAt - firstSeen);
      toPass.push(passed.at - t0);
      oneRequest.push((await ok(ask('/warm/again'))).requestMs);
    }
    const p50 = (xs: number[]) => percentiles(Float64Array.from(xs)).p50;
    return [
      {
        name: `denial → proposal visible on the live feed, p50 (${ROUNDS} rounds)`,
        value: p50(toProposal),
        unit: 'ms',
        baseline: p50(toDecision),
        baselineName: 'the same denial on the feed as a decision',
        target: { max: 500 },
      },
      {
        name: `approval → the same request passes, p50 (${ROUNDS} rounds; the agent retries every 5 ms)`,
        value: p50(toPass),
        unit: 'ms',
        baseline: p50(oneRequest),
        baselineName: 'one allowed request of the agent through the proxy',
        target: { max: 100 },
      },
    ];
  } finally {
    feedAbort.stop = true;
    await client.call('DELETE', '/v1/sandboxes/bench').catch(() => undefined);
    gw.kill('SIGTERM');
    await once(gw, 'exit');
    upstream.closeAllConnections();
    upstream.close();
    rmSync(home, { recursive: true, force: true });
  }
}

export const approvalsBench: BenchModule = { name: 'approvals', run };
