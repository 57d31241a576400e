/**
 * An allowed request's audit line is written before anything of the request leaves the proxy, also
 * when the sink batches its writes (AuditSink.emitAhead, one write per event-loop turn): a request
 * whose line has not been written yet is held, and one whose line cannot be written never goes.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemoryAuditLog, type OcsfEvent } from '../../src/audit/index.js';
import { HttpReader, type Rig, type Upstreams, relayConnect, startRig, startUpstreams } from './harness.js';

/** A sink whose batched writes finish when the test says. */
class HeldAudit extends MemoryAuditLog {
  readonly pending: { event: OcsfEvent; write: () => void; fail: (err: Error) => void }[] = [];
  emitAhead(event: OcsfEvent): Promise<void> {
    return new Promise((resolve, reject) =>
      this.pending.push({
        event,
        write: () => {
          this.events.push(event);
          resolve();
        },
        fail: reject,
      }),
    );
  }
}

let up: Upstreams;
let rig: Rig;
const audit = new HeldAudit();

beforeAll(async () => {
  up = await startUpstreams();
  rig = await startRig({
    up,
    audit,
    policy: `
version: 1
network_policies:
  api:
    endpoints:
      - { host: api.example.test, port: ${up.httpPort}, protocol: rest, access: full }
    binaries: [ { path: /usr/bin/curl } ]
`,
  });
});
afterAll(async () => {
  await rig.close();
  await up.close();
});

const until = async (ok: () => boolean): Promise<void> => {
  while (!ok()) await new Promise((r) => setTimeout(r, 5));
};

describe("an allowed request's audit line", () => {
  it('is written before the request reaches the upstream', async () => {
    const s = await relayConnect(rig.socketPath);
    const reader = new HttpReader(s);
    s.write(
      `GET http://api.example.test:${up.httpPort}/held HTTP/1.1\r\nHost: api.example.test:${up.httpPort}\r\n\r\n`,
    );
    await until(() => audit.pending.length === 1);
    // Held while its line is not written: give the proxy time to (wrongly) go on.
    await new Promise((r) => setTimeout(r, 100));
    expect(up.seen.filter((r) => r.url === '/held')).toEqual([]);
    audit.pending[0]!.write();
    expect((await reader.response()).status).toBe(200);
    expect(up.seen.filter((r) => r.url === '/held')).toHaveLength(1);
    s.destroy();
  });

  it('that cannot be written stops the request: it never reaches the upstream', async () => {
    const s = await relayConnect(rig.socketPath, 40001);
    s.write(
      `GET http://api.example.test:${up.httpPort}/lost HTTP/1.1\r\nHost: api.example.test:${up.httpPort}\r\n\r\n`,
    );
    await until(() => audit.pending.length === 2);
    audit.pending[1]!.fail(Object.assign(new Error('disk full'), { code: 'ENOSPC' }));
    await new Promise<void>((resolve) => s.once('close', () => resolve()));
    expect(up.seen.filter((r) => r.url === '/lost')).toEqual([]);
  });
});
