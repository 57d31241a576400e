/**
 * Router bench (issue: the privacy router): against a direct connection to the same fake provider,
 * in one run —
 * - added time to first token, p50: a streamed chat completion on a kept-alive connection, timed
 *   from the request to the first text delta, directly to the provider (HTTPS) and through the
 *   sandbox's proxy socket to https://inference.local (TLS terminated with the sandbox's CA, the
 *   router, HTTPS to the provider with the key injected, one audit event per call). Target ≤ +2 ms;
 * - streamed throughput: text deltas per second of a long answer the provider sends as fast as it
 *   can, both ways. Target ≥ 95 % of direct;
 * - classification: every built-in detector over a 100 KB prompt. Target ≤ 1 ms per 100 KB; beside
 *   JSON.parse of the same body (which the router does anyway), a custom pattern, and redaction.
 *
 * Layout as in the proxy bench: the proxy and the router run here (one host process, as in
 * production); the fake provider and the client share a worker thread, so the direct baseline and
 * the routed path run the same client and provider code.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { JsonlAuditLog } from '../src/audit/index.js';
import { compilePolicy, parsePolicy } from '../src/policy/index.js';
import { EgressProxy } from '../src/proxy/egress-proxy.js';
import { TlsAuthority } from '../src/proxy/tls/tls-authority.js';
import { InferenceRouter } from '../src/router/index.js';
import { sharedUpstreamTrust } from '../src/proxy/index.js';
import { classify, compileRules, contentStrings } from '../src/router/privacy/classify.js';
import { Redactor } from '../src/router/privacy/redact.js';
import { BUILTIN_DETECTORS } from '../src/policy/index.js';
import { percentiles, timeEach, type BenchModule, type BenchRow } from './framework.js';
import type { PeerTask, ProviderInfo, Target } from './router-peer.js';

const TTFT_SAMPLES = 400;
const STREAM_DELTAS = 20_000;
const STREAM_ROUNDS = 8;
const PACED_DELTAS = 5_000;

function firstMessage<T>(w: Worker): Promise<T> {
  return new Promise((resolve, reject) => {
    w.once('message', resolve);
    w.once('error', reject);
  });
}

async function ask<T>(w: Worker, task: PeerTask): Promise<T> {
  w.postMessage(task);
  const reply = await firstMessage<{ ok: boolean; result?: T; error?: string }>(w);
  if (!reply.ok) throw new Error(`bench peer: ${reply.error}`);
  return reply.result as T;
}

const median = (xs: number[]): number => percentiles(Float64Array.from(xs)).p50;

/** A prompt of about `bytes` of ordinary text with a few things the detectors look for. */
export function samplePrompt(bytes: number): string {
  const words =
    'the agent reads the repository and proposes a change to the build script so that tests run ' +
    'in parallel on every core; it keeps a list of open questions for the reviewer, version 2.4.1 ' +
    'at 12:30, order 20240518, see https://example.com/docs/page?id=42 and ask ops ';
  let out = '';
  let i = 0;
  while (out.length < bytes) {
    out += words;
    if (i % 40 === 0) out += 'contact jane.doe@example.com or +44 20 7946 0958 ';
    if (i % 97 === 0) out += 'card 4111 1111 1111 1111 ';
    i++;
  }
  return out.slice(0, bytes);
}

async function run(): Promise<BenchRow[]> {
  const peer = new Worker(new URL('./router-peer.js', import.meta.url));
  peer.setMaxListeners(0);
  const info = await firstMessage<ProviderInfo>(peer);
  const auditDir = mkdtempSync(join(tmpdir(), 'carapace-bench-router-audit-'));
  const audit = new JsonlAuditLog(join(auditDir, 'audit.jsonl'));
  const router = new InferenceRouter({
    audit,
    upstreamTrust: () => sharedUpstreamTrust(info.caFile).context,
    providers: { named: () => null, credential: () => 'sk-bench-provider-key' },
  });
  const proxy = new EgressProxy({ audit, internalHosts: [router.internalHost] });
  const authority = TlsAuthority.create({ sandbox: 'bench' });
  const socketPath = join(mkdtempSync(join(tmpdir(), 'carapace-bench-router-sock-')), 'proxy.sock');
  const parsed = parsePolicy(
    `version: 1\ninference:\n  routes:\n    cloud: { provider: openai-compatible, endpoint: "${info.url}", model: served, credential_env: KEY }\n`,
    'bench.yaml',
  );
  if (!parsed.ok) throw new Error(parsed.diagnostics[0]?.message);
  const caller = { pid: process.pid, binary: '/usr/bin/node', ancestors: [] };
  await proxy.attachSandbox({
    name: 'bench',
    heldBy: 'run',
    socketPath,
    generation: compilePolicy(parsed.policy),
    callerResolver: { resolve: async () => ({ ok: true, caller }) },
    authority,
  });
  const direct: Target = { kind: 'direct', port: info.port, ca: info.caPem };
  const routed: Target = { kind: 'routed', socketPath, ca: authority.caPem };
  const rows: BenchRow[] = [];
  try {
    // 1. Time to first token.
    await ask(peer, { cmd: 'ttft', target: routed, samples: 100 });
    await ask(peer, { cmd: 'ttft', target: direct, samples: 100 });
    const r: number[] = [];
    const d: number[] = [];
    for (let round = 0; round < 4; round++) {
      r.push(...(await ask<number[]>(peer, { cmd: 'ttft', target: routed, samples: TTFT_SAMPLES / 4 })));
      d.push(...(await ask<number[]>(peer, { cmd: 'ttft', target: direct, samples: TTFT_SAMPLES / 4 })));
    }
    const rT = median(r);
    const dT = median(d);
    rows.push({
      name: 'time to first token via inference.local (TLS, router, key injected, audited), p50',
      value: rT,
      unit: 'ms',
      baseline: dT,
      baselineName: 'direct HTTPS to the provider',
      target: { max: dT + 2 },
    });

    // 2. Streamed throughput: at a model's pace (fast: 20 deltas every 2 ms, about 5,000 a second,
    // dozens of times what a model streams), and with the provider as fast as it can go.
    const stream = async (target: Target, deltas: number, pace?: { burst: number; delayMs: number }) =>
      (await ask<{ ms: number }[]>(peer, { cmd: 'stream', target, deltas, rounds: 1, pace }))[0]!.ms;
    const paced = { burst: 20, delayMs: 2 };
    await stream(routed, 2_000, paced);
    await stream(direct, 2_000, paced);
    const rp: number[] = [];
    const dp: number[] = [];
    for (let round = 0; round < 3; round++) {
      rp.push(PACED_DELTAS / ((await stream(routed, PACED_DELTAS, paced)) / 1000));
      dp.push(PACED_DELTAS / ((await stream(direct, PACED_DELTAS, paced)) / 1000));
    }
    const dPaced = median(dp);
    rows.push({
      name: `streamed deltas per second at a fast model's pace (${PACED_DELTAS} deltas, 20 every 2 ms), median`,
      value: median(rp),
      unit: 'deltas/s',
      baseline: dPaced,
      baselineName: 'direct',
      target: { min: 0.95 * dPaced },
    });
    await stream(routed, STREAM_DELTAS);
    await stream(direct, STREAM_DELTAS);
    const rs: number[] = [];
    const ds: number[] = [];
    for (let round = 0; round < STREAM_ROUNDS; round++) {
      rs.push(STREAM_DELTAS / ((await stream(routed, STREAM_DELTAS)) / 1000));
      ds.push(STREAM_DELTAS / ((await stream(direct, STREAM_DELTAS)) / 1000));
    }
    rows.push({
      name: `streamed deltas per second, provider as fast as it can (${STREAM_DELTAS} deltas), median`,
      value: median(rs),
      unit: 'deltas/s',
      baseline: median(ds),
      baselineName: 'direct',
    });
  } finally {
    await proxy.close();
    await router.close();
    audit.close();
    await peer.terminate();
  }

  // 3. Classification of a 100 KB prompt.
  const prompt = samplePrompt(100 * 1024);
  const body = JSON.stringify({
    model: 'm',
    messages: [
      { role: 'system', content: 'be helpful' },
      { role: 'user', content: prompt },
    ],
  });
  const rules = compileRules([
    { name: 'all', detect: [...BUILTIN_DETECTORS], action: 'route', route: 'local' },
  ]);
  const prefixed = compileRules([{ name: 'codes', match: 'PRJ-[0-9]{4}', action: 'redact' }]);
  const unprefixed = compileRules([{ name: 'codes', match: '[A-Z]{2,4}-[0-9]{4,6}', action: 'redact' }]);
  const parsedBody = JSON.parse(body) as unknown;
  const strings = contentStrings(parsedBody).map((s) => s.value);
  const found = classify(strings, rules);
  if (found.fired.length !== 1) throw new Error('bench: the sample prompt should fire the rule');
  const classifyUs = timeEach(400, () => classify(strings, rules), 50);
  const parseUs = timeEach(400, () => JSON.parse(body), 50);
  rows.push({
    name: 'classification: every built-in detector over a 100 KB prompt, p50',
    value: classifyUs.p50 / 1000,
    unit: 'ms',
    baseline: parseUs.p50 / 1000,
    baselineName: 'JSON.parse of the request',
    target: { max: 1 },
  });
  const prefixedUs = timeEach(200, () => classify(strings, prefixed), 20);
  rows.push({
    name: 'classification: a custom pattern that starts with a literal (PRJ-[0-9]{4}) over 100 KB, p50',
    value: prefixedUs.p50 / 1000,
    unit: 'ms',
  });
  const unprefixedUs = timeEach(50, () => classify(strings, unprefixed), 5);
  rows.push({
    name: 'classification: a custom pattern with no literal start ([A-Z]{2,4}-[0-9]{4,6}, linear engine) over 100 KB, p50',
    value: unprefixedUs.p50 / 1000,
    unit: 'ms',
  });
  const redactor = new Redactor(Buffer.alloc(32, 7));
  const redactRules = new Set(rules);
  const redactUs = timeEach(
    200,
    () => {
      const copy = JSON.parse(body) as unknown;
      const cs = contentStrings(copy);
      return redactor.redact(
        cs,
        classify(
          cs.map((s) => s.value),
          rules,
        ).hits,
        redactRules,
      );
    },
    20,
  );
  rows.push({
    name: 'redaction: parse, classify and replace in a 100 KB prompt, p50',
    value: redactUs.p50 / 1000,
    unit: 'ms',
  });
  return rows;
}

export const routerBench: BenchModule = { name: 'router', run };
