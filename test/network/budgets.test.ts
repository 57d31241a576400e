/**
 * What the proxy may spend on a sandbox derives from the sandbox's own limits (docs/proxy.md,
 * "Budgets"): `carapace run` with `limits: { memory: 128Mi, cpu: 50m }` attaches the sandbox with a
 * 16 MiB buffer budget, 512 connections and 50 ms of proxy work per second, and says so in its
 * audit log; a sandbox without limits gets the defaults (its proxy work is then not limited, as its
 * own CPU is not). The sandbox is served either way.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FS_POLICY, readAudit, runCli, upstreamOptions } from '../helpers/network.js';
import { sharedTempDir } from '../helpers/sandbox.js';
import { startUpstreams, type Upstreams } from '../proxy/harness.js';

let up: Upstreams;
beforeAll(async () => {
  up = await startUpstreams();
});
afterAll(() => up.close());

async function run(limits: string): Promise<{ stdout: string; budgets: unknown }> {
  const dir = sharedTempDir();
  const policy = join(dir, 'policy.yaml');
  writeFileSync(
    policy,
    `${FS_POLICY}${limits}network_policies:
  api:
    endpoints:
      - { host: api.test, port: ${up.httpPort}, access: full }
`,
    { mode: 0o644 },
  );
  const audit = join(dir, 'audit.jsonl');
  const r = await runCli([
    'run',
    '--policy',
    policy,
    '--audit',
    audit,
    ...upstreamOptions(['api.test'], [up.httpPort], up.caFile),
    '--',
    'curl',
    '-sS',
    '-o',
    '/dev/null',
    '-w',
    '%{http_code}',
    `http://api.test:${up.httpPort}/budgets`,
  ]);
  expect(r.stderr).toBe('');
  const event = readAudit(audit).find((e) => e.class_uid === 6002 && e.unmapped.proxy_budgets !== undefined);
  return { stdout: r.stdout, budgets: event?.unmapped.proxy_budgets };
}

describe('the proxy budgets of a sandbox', () => {
  it('derive from its limits (128Mi, 50m) and are recorded when it attaches', async () => {
    const r = await run('limits: { memory: 128Mi, cpu: 50m }\n');
    expect(r.stdout).toBe('200');
    expect(r.budgets).toEqual({
      buffer_bytes: 16 * 1024 * 1024,
      max_connections: 512,
      work_us_per_second: 50_000,
      work_burst_us: 100_000,
    });
  });

  it("the sandbox's own socket memory counts against its memory limit (cgroup v1: memory.kmem.tcp)", async () => {
    const ws = sharedTempDir('carapace-ws-');
    const auditFile = join(ws, '..', `audit-${Date.now()}.jsonl`);
    const policy = join(sharedTempDir(), 'policy.yaml');
    writeFileSync(policy, `${FS_POLICY}limits: { memory: 128Mi }\nnetwork_policies: {}\n`, { mode: 0o644 });
    const running = runCli([
      'run',
      '--policy',
      policy,
      '--audit',
      auditFile,
      '--workspace',
      ws,
      '--',
      'sh',
      '-c',
      'touch /sandbox/up; while [ ! -e /sandbox/go ]; do sleep 0.05; done',
    ]);
    try {
      while (!existsSync(join(ws, 'up'))) await new Promise((r) => setTimeout(r, 20));
      // The start event may reach the file a moment after the agent is up.
      const startEvent = () => readAudit(auditFile).find((e) => e.class_uid === 6002 && e.activity_id === 3);
      while (!startEvent()) await new Promise((r) => setTimeout(r, 20));
      const start = startEvent();
      const dirs = (start?.unmapped.limits as { dirs?: string[] } | undefined)?.dirs ?? [];
      const memory = dirs.find(
        (d) => existsSync(join(d, 'memory.max')) || existsSync(join(d, 'memory.limit_in_bytes')),
      );
      expect(memory).toBeDefined();
      // cgroup v2 charges a cgroup's sockets to it always; v1 only once its TCP limit is set.
      if (existsSync(join(memory!, 'memory.kmem.tcp.limit_in_bytes'))) {
        expect(readFileSync(join(memory!, 'memory.kmem.tcp.limit_in_bytes'), 'utf8').trim()).toBe(
          String(128 * 1024 * 1024),
        );
      }
    } finally {
      writeFileSync(join(ws, 'go'), '');
      expect((await running).status).toBe(0);
    }
  });

  it('are the defaults without limits (no cpu limit: proxy work not limited)', async () => {
    const r = await run('');
    expect(r.stdout).toBe('200');
    expect(r.budgets).toEqual({
      buffer_bytes: 64 * 1024 * 1024,
      max_connections: 1024,
      work_us_per_second: null,
      work_burst_us: null,
    });
  });
});
