/**
 * Policy decision time: decideConnect and decideRequest at 10, 1,000 and 5,000 endpoints, against
 * a plain Map lookup of the host measured the same way (which also shows the cost of the timer).
 * Target: p99 ≤ 5 µs per decision at 5,000 endpoints.
 *
 * The synthetic policy mixes what real ones hold: exact hosts (L4 and inspected REST with allow
 * and deny rules), `*.x` and `**.x` wildcards, port lists, entries limited to binaries (one
 * exact, one glob) and entries for any program. Queries mix hits, wildcard hits and misses.
 */
import {
  compilePolicy,
  type ConnectQuery,
  type Endpoint,
  type NetworkPolicy,
  type Policy,
  type RequestQuery,
} from '../src/policy/index.js';
import {
  percentiles,
  settleYoungGeneration,
  timeEach,
  type BenchModule,
  type BenchRow,
} from './framework.js';

const SIZES = [10, 1_000, 5_000];
const SAMPLES = 200_000;
const TARGET_P99_US = 5;

function endpoint(j: number): Endpoint {
  switch (j % 10) {
    case 0:
    case 1:
    case 2:
      return {
        host: `api${j}.example.com`,
        port: 443,
        protocol: 'rest',
        rules: [
          { allow: { method: 'GET', path: '/v1/**' } },
          { allow: { method: 'POST', path: '/v1/items/*' } },
        ],
        deny_rules: [{ method: 'POST', path: '/v1/items/admin' }],
      };
    case 8:
      return { host: `*.svc${j}.example.com`, port: 443 };
    case 9:
      return { host: `**.deep${j}.example.org`, ports: [80, 443] };
    default:
      return { host: `host${j}.example.net`, port: 443 };
  }
}

export function syntheticPolicy(n: number): Policy {
  const network_policies: Record<string, NetworkPolicy> = {};
  for (let i = 0; i < n; i += 10) {
    const entry: NetworkPolicy = { endpoints: [] };
    for (let j = i; j < Math.min(n, i + 10); j++) entry.endpoints.push(endpoint(j));
    if (i % 20 === 0) entry.binaries = [{ path: '/usr/bin/git' }, { path: '/usr/bin/python3*' }];
    network_policies[`p${String(i).padStart(5, '0')}`] = entry;
  }
  return { version: 1, network_policies };
}

const BINARIES: Pick<ConnectQuery, 'binary' | 'ancestors'>[] = [
  { binary: '/usr/bin/git', ancestors: ['/usr/bin/bash', '/usr/local/bin/node'] },
  { binary: '/usr/bin/python3.11', ancestors: ['/usr/bin/bash'] },
  { binary: '/usr/bin/curl', ancestors: ['/usr/bin/bash', '/usr/local/bin/node'] },
];

/** A deterministic mix of queries over the endpoints of a size-n policy. */
function connectQueries(n: number, count: number): ConnectQuery[] {
  const out: ConnectQuery[] = [];
  let seed = 12345;
  const rand = (k: number): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % k;
  };
  for (let i = 0; i < count; i++) {
    const j = rand(n);
    const who = BINARIES[i % BINARIES.length];
    const kind = j % 10;
    let host: string;
    if (i % 4 === 3) host = `miss${j}.example.com`;
    else if (kind === 8) host = `a${i % 7}.svc${j}.example.com`;
    else if (kind === 9) host = `x.y${i % 5}.deep${j}.example.org`;
    else if (kind <= 2) host = `API${j}.Example.com.`;
    else host = `host${j}.example.net`;
    out.push({ host, port: 443, ...who });
  }
  return out;
}

function requestQueries(n: number, count: number): RequestQuery[] {
  const out: RequestQuery[] = [];
  const l7 = Math.max(1, Math.floor(n / 10));
  for (let i = 0; i < count; i++) {
    const j = (i % l7) * 10 + (i % 3);
    const method = i % 3 === 0 ? 'POST' : 'GET';
    const path = i % 5 === 0 ? '/v1/items/admin' : `/v1/items/${i % 1000}`;
    out.push({ host: `api${j}.example.com`, port: 443, method, path, ...BINARIES[i % BINARIES.length] });
  }
  return out;
}

function measure(n: number): BenchRow[] {
  const policy = syntheticPolicy(n);
  // Compiling is slow next to a decision: the median of a few runs, not one.
  const compileRuns = new Float64Array(5);
  let gen = compilePolicy(policy);
  for (let r = 0; r < compileRuns.length; r++) {
    const t0 = process.hrtime.bigint();
    gen = compilePolicy(policy);
    compileRuns[r] = Number(process.hrtime.bigint() - t0) / 1e6;
  }
  const compileMs = percentiles(compileRuns).p50;
  const QN = 8192;
  const connects = connectQueries(n, QN);
  const requests = requestQueries(n, QN);
  const map = new Map<string, number>();
  for (let j = 0; j < n; j++) map.set(`api${j}.example.com`, j);
  const keys = connects.map((q) => q.host.toLowerCase());

  const decideConnect = (i: number) => gen.decideConnect(connects[i & (QN - 1)] as ConnectQuery);
  const decideRequest = (i: number) => gen.decideRequest(requests[i & (QN - 1)] as RequestQuery);
  // Steady state: the young generation grown (after the compiles above) and used, before timing.
  settleYoungGeneration(decideConnect);
  settleYoungGeneration(decideRequest);
  const baseline = timeEach(SAMPLES, (i) => map.get(keys[i & (QN - 1)] as string));
  const connect = timeEach(SAMPLES, decideConnect);
  const request = timeEach(SAMPLES, decideRequest);
  const size = n.toLocaleString('en-US');
  const base = { unit: 'µs', baselineName: 'Map.get' };
  return [
    { name: `decideConnect p50, ${size} endpoints`, value: connect.p50, baseline: baseline.p50, ...base },
    {
      name: `decideConnect p99, ${size} endpoints`,
      value: connect.p99,
      baseline: baseline.p99,
      ...base,
      target: { max: TARGET_P99_US },
    },
    { name: `decideRequest p50, ${size} endpoints`, value: request.p50, baseline: baseline.p50, ...base },
    {
      name: `decideRequest p99, ${size} endpoints`,
      value: request.p99,
      baseline: baseline.p99,
      ...base,
      target: { max: TARGET_P99_US },
    },
    { name: `compilePolicy p50 of 5, ${size} endpoints`, value: compileMs, unit: 'ms' },
  ];
}

export const policyDecisionBench: BenchModule = {
  name: 'policy',
  run: () => SIZES.flatMap(measure),
};
