/**
 * Many connections through the relay and the proxy, from inside a real sandbox: the agent opens
 * 1,500 tunnels to an allowed upstream and holds them. The proxy keeps at most its per-sandbox
 * limit (maxConnections, 1,024) open and closes the rest at once, with one audit event for reaching
 * the limit; the upstream never sees more than the limit; another sandbox started meanwhile works;
 * and once the agent lets go, its own new connections are served again.
 *
 * (The open-files limit bounds the same flood inside the sandbox: test/attacks/relay.test.ts.)
 */
import { existsSync, writeFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sharedTempDir } from '../helpers/sandbox.js';
import { startUpstreams, type Upstreams } from '../proxy/harness.js';
import { python, refusals, runInside, type RunSetup } from './proxy-sandbox.js';

let up: Upstreams;
/** A TCP upstream that accepts and holds connections, counting them. */
let sink: Server;
let sinkPort = 0;
const held = new Set<Socket>();
let accepted = 0;
let mostAtOnce = 0;

beforeAll(async () => {
  up = await startUpstreams();
  sink = createServer((s) => {
    accepted++;
    held.add(s);
    mostAtOnce = Math.max(mostAtOnce, held.size);
    s.on('error', () => undefined);
    s.on('close', () => held.delete(s));
  });
  await new Promise<void>((r) => sink.listen(0, '127.0.0.1', r));
  sinkPort = (sink.address() as { port: number }).port;
});
afterAll(async () => {
  await up.close();
  for (const s of held) s.destroy();
  await new Promise((r) => sink.close(r));
});

const LIMIT = 1024;
const FLOOD = 1500;

async function waitFor(what: string, check: () => boolean, timeoutMs = 150_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('a connection flood', () => {
  it('stays at the per-sandbox limit, audited once; another sandbox works meanwhile; the proxy serves again after', async () => {
    const setup = (options: string[] = []): RunSetup => ({
      network: `  flood:
    name: flood
    endpoints:
      - { host: flood.test, port: ${sinkPort}, access: full }
      - { host: api.test, port: ${up.httpPort}, access: full }
`,
      up,
      names: ['flood.test', 'api.test'],
      options: ['--allow-local', `127.0.0.1:${sinkPort}`, ...options],
    });
    const ws = sharedTempDir('carapace-ws-');
    // Batches of 50, each answered before the next: the relay's host socket never has more than
    // 50 connections waiting to be accepted, so what bounds the flood is the proxy's limit.
    const flood = runInside(
      setup(['--workspace', ws]),
      python(`
import os, time
held, ok, refused = [], 0, 0
while len(held) < ${FLOOD}:
    batch = []
    for _ in range(50):
        s = socket.create_connection(('127.0.0.1', 3128))
        s.sendall(b'CONNECT flood.test:${sinkPort} HTTP/1.1\\r\\nHost: flood.test:${sinkPort}\\r\\n\\r\\n')
        batch.append(s)
    for s in batch:
        s.settimeout(120)
        try:
            answer = s.recv(64)
        except OSError:
            answer = b''
        if answer.startswith(b'HTTP/1.1 200'):
            ok += 1
        else:
            refused += 1
    held += batch
print(json.dumps(dict(label='flood', ok=ok, refused=refused, responses=[], end='closed')), flush=True)
open('/sandbox/flooded', 'w').close()
while not os.path.exists('/sandbox/go'):
    time.sleep(0.05)
for s in held:
    s.close()
time.sleep(0.5)
probe_connect('flood.test:${sinkPort}', 'after')
`),
    );
    await waitFor('the flood to be in place', () => existsSync(join(ws, 'flooded')));
    expect(held.size).toBe(LIMIT);

    // Meanwhile another sandbox (its own proxy, as a gateway would give it) is served.
    const other = await runInside(
      setup(),
      python(
        `exchange([${JSON.stringify(`GET http://api.test:${up.httpPort}/during-flood HTTP/1.1\r\nHost: api.test:${up.httpPort}\r\nConnection: close\r\n\r\n`)}], 'other')`,
      ),
    );
    expect(other.results[0]?.responses.map((r) => r.status)).toEqual([200]);

    writeFileSync(join(ws, 'go'), '');
    const o = await flood;
    const result = o.results.find((r) => r.label === 'flood');
    expect({ ok: result?.ok, refused: result?.refused }).toEqual({ ok: LIMIT, refused: FLOOD - LIMIT });
    expect(mostAtOnce).toBe(LIMIT);
    expect(o.results.find((r) => r.label === 'after')?.responses.map((r) => r.status)).toEqual([200]);
    expect(accepted).toBe(LIMIT + 1);

    const limitEvents = refusals(o.audit, 4001).filter((e) =>
      String(e.unmapped.reason).startsWith(`connection limit reached: ${LIMIT} connections open`),
    );
    expect(limitEvents).toHaveLength(1);
    const opened = o.audit.filter((e) => e.class_uid === 4001 && e.disposition_id === 1);
    expect(opened).toHaveLength(LIMIT + 1);
  }, 300_000);
});
