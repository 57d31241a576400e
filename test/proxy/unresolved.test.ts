/**
 * A name the policy allows but DNS does not resolve is the upstream's failure, like a refused
 * connect: a 502 that says so, never a 403 `policy_denied` with a policy hint (which sent users to
 * their policy, and in a gateway made a proposal no approval could make work). Names are resolved
 * by a resolver of the test's: no query leaves the host.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HttpReader, type Rig, connectTunnel, eventsOf, relayConnect, send, startRig } from './harness.js';

let rig: Rig;
const asked: string[] = [];
const noSuchName = async (host: string): Promise<never> => {
  asked.push(host);
  throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
};

beforeAll(async () => {
  rig = await startRig({
    policy: `
version: 1
network_policies:
  api:
    endpoints:
      - { host: gone.example.test, port: 443 }
      - { host: gone.example.test, port: 80, protocol: rest, access: full }
      - { host: "*.wild.example.test", port: 443 }
    binaries: [ { path: /usr/bin/curl } ]
`,
    resolver: noSuchName,
  });
});
afterAll(() => rig.close());

describe('an allowed name that does not resolve', () => {
  it('is a 502 upstream_unreachable through CONNECT, with no denial in the audit', async () => {
    const t = await connectTunnel(rig.socketPath, 'gone.example.test:443');
    expect(t.status).toBe(502);
    expect(t.response.json()).toMatchObject({
      error: 'upstream_unreachable',
      host: 'gone.example.test',
      port: 443,
      reason: 'name did not resolve (ENOTFOUND)',
    });
    expect(eventsOf(rig.audit, 4001).filter((e) => e.disposition === 'Blocked')).toEqual([]);
    t.socket.destroy();
  });

  it('is a 502 for a forward request too', async () => {
    const s = await relayConnect(rig.socketPath);
    const res = await send(
      new HttpReader(s),
      'GET http://gone.example.test/ HTTP/1.1\r\nHost: gone.example.test\r\n\r\n',
    );
    expect(res.status).toBe(502);
    expect(res.json()).toMatchObject({
      error: 'upstream_unreachable',
      reason: 'name did not resolve (ENOTFOUND)',
    });
    expect(eventsOf(rig.audit, 4001).filter((e) => e.disposition === 'Blocked')).toEqual([]);
    const traced = eventsOf(rig.audit, 4001).filter(
      (e) => e.disposition === 'Allowed' && (e.dst_endpoint as { port?: number }).port === 80,
    );
    expect(traced).toHaveLength(1);
    expect(String(traced[0]!.unmapped.reason)).toContain('name did not resolve (ENOTFOUND)');
    s.destroy();
  });

  // The name is the agent's to choose under a wildcard, and the host's resolver asks for it: a
  // channel out (DNS exfiltration) that must leave a trace, allowed (no denial, no proposal).
  it('leaves an allowed 4001 line naming the host and why it failed', async () => {
    const name = 'onswg4tfoqqgwzlz.wild.example.test';
    const t = await connectTunnel(rig.socketPath, `${name}:443`);
    expect(t.status).toBe(502);
    t.socket.destroy();
    expect(asked).toContain(name);
    const lines = rig.audit.events.filter((e) => JSON.stringify(e).includes(name));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ class_uid: 4001, disposition: 'Allowed' });
    expect(String(lines[0]!.unmapped.reason)).toContain('name did not resolve (ENOTFOUND)');
  });
});
