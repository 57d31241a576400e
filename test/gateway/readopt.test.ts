/**
 * Always on (issue 13): `kill -9` of the gateway while an agent runs — and while a policy update
 * is being applied — leaves the agent running; the next gateway re-adopts it (a "gateway lost"
 * event in its audit trail), serves its proxy again, and holds exactly the old or the new policy
 * revision; no audit line written before the kill is missing.
 */
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GatewayClient } from '../../src/cli/gateway/gateway-client.js';
import { processStart } from '../../src/sandbox/processes.js';
import { REQUEST_AGENT, requester } from '../helpers/gateway-agent.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { FS_POLICY } from '../helpers/network.js';
import { holds } from '../helpers/premises.js';
import { startUpstreams, type Upstreams } from '../proxy/harness.js';

interface View {
  id: string;
  state: string;
  workspace: string;
  policyRev: number;
}

describe.skipIf(!holds('root'))('kill -9 of the gateway', () => {
  let gw: TestGateway;
  let up: Upstreams;
  const client = () =>
    new GatewayClient({
      socket: join(gw.home, 'run', 'gateway.sock'),
      own: true,
      dirs: { state: join(gw.home, 'state'), run: join(gw.home, 'run') },
    });
  const policy = (paths: string) => `${FS_POLICY}network_policies:
  host:
    name: host
    endpoints:
      - host: host.openshell.internal
        port: PORT
        protocol: rest
        rules: [ { allow: { method: GET, path: "${paths}" } } ]
`;
  beforeAll(async () => {
    up = await startUpstreams();
    gw = await startTestGateway();
  });
  afterAll(async () => {
    await gw?.stop();
    await up?.close();
  });

  it('leaves the agent running; the next gateway re-adopts it with its audit trail and exactly one revision', async () => {
    const text = (paths: string) => policy(paths).replace('PORT', String(up.httpPort));
    const created = await client().call<View>('POST', '/v1/sandboxes', {
      name: 'agent',
      command: ['python3', '-c', REQUEST_AGENT],
      policy: text('/allowed/**'),
    });
    const ask = requester(created.workspace);
    const url = (p: string) => `http://host.openshell.internal:${up.httpPort}${p}`;
    expect(await ask(url('/allowed/x'))).toBe('200');
    expect(await ask(url('/other'))).toBe('403');

    const auditFile = join(gw.home, 'state', 'audit', `${created.id}.jsonl`);
    const lockFile = join(gw.home, 'run', 'sandboxes', `${created.id}.lock`);
    const init = JSON.parse(readFileSync(lockFile, 'utf8')) as { pid: number; start: number };

    // A policy change on its way in when the gateway dies.
    // (Through the API: the CLI would start a gateway of its own once this one is gone.)
    const change = client()
      .call('PUT', '/v1/sandboxes/agent/policy', { policy: text('/**') })
      .catch(() => null);
    await new Promise((r) => setTimeout(r, 30));
    const before = readFileSync(auditFile, 'utf8');
    gw.child.kill('SIGKILL');
    await new Promise((r) => gw.child.once('exit', r));
    await change;

    // The agent runs on, alone: its init is the very process it was.
    expect(processStart(init.pid)).toBe(init.start);
    // Meanwhile its requests fail (no proxy answers its relay): an error, not a status.
    expect(await ask(url('/allowed/y'))).not.toMatch(/^\d+$/);

    gw = await startTestGateway([], gw.home);
    const view = await client().call<View>('GET', '/v1/sandboxes/agent');
    expect(view.state).toBe('running');
    expect(processStart(init.pid)).toBe(init.start); // the same agent, not a new one
    expect(readFileSync(join(created.workspace, 'starts'), 'utf8')).toBe('start\n');

    // Exactly the old or the new revision, in the store and in what the proxy does.
    expect([1, 2]).toContain(view.policyRev);
    expect(await ask(url('/allowed/z'))).toBe('200');
    expect(await ask(url('/other'))).toBe(view.policyRev === 2 ? '200' : '403');

    // Nothing written before the kill is lost, and the loss of the gateway is on the record.
    const after = readFileSync(auditFile, 'utf8');
    expect(after.startsWith(before)).toBe(true);
    const events = after
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { message: string; unmapped: Record<string, unknown> });
    expect(events.some((e) => e.unmapped.gateway_lost === true && /re-adopted/.test(e.message))).toBe(true);
  });

  it('a re-adopted sandbox, stopped, starts again and is served by the proxy', async () => {
    // The previous test left `agent` re-adopted by this gateway. Its end must release what the
    // gateway attached for it: a start after a stop was refused ("already attached", a 500).
    const stopped = await client().call<View>('POST', '/v1/sandboxes/agent/stop', {});
    expect(stopped.state).toBe('stopped');
    // The next agent counts its requests from 1 again: the old ones' files go.
    for (const f of readdirSync(stopped.workspace))
      if (/^(go|out)-/.test(f)) rmSync(join(stopped.workspace, f));
    const started = await client().call<View>('POST', '/v1/sandboxes/agent/start', {});
    expect(started.state).toBe('running');
    const ask = requester(started.workspace);
    expect(await ask(`http://host.openshell.internal:${up.httpPort}/allowed/again`)).toBe('200');
  });
});
