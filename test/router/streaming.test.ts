/**
 * Streams with backpressure, never held whole: a reader that stops reading stops the provider
 * (through the proxy, the router and the provider's socket), and gets every event once it reads
 * again. Timeouts: the provider's silence ends a call (idle_timeout); the defaults suit reasoning
 * models (minutes).
 */
import http from 'node:http';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parsePolicy } from '../../src/policy/index.js';
import { DEFAULT_IDLE_TIMEOUT_MS, DEFAULT_TIMEOUT_MS, routeTable } from '../../src/router/index.js';
import { FakeProvider, startFake } from '../helpers/fake-providers.js';
import { parseSse, policy, startRouterRig, type RouterRig } from './harness.js';

let fake: FakeProvider;
let r: RouterRig;
const FILLER = 200_000;

beforeAll(async () => {
  fake = await startFake({ kind: 'openai' });
  r = await startRouterRig(
    policy(`  routes:
    m: { provider: vllm, endpoint: "${fake.url}", model: m, local: true }`),
  );
});
afterAll(async () => {
  await r.close();
  await fake.close();
});

describe('streaming', () => {
  it('a reader that stops reading stops the provider; it gets every event when it reads again', async () => {
    fake.fillerDeltas = FILLER;
    try {
      const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
        const req = http.request({
          method: 'POST',
          path: 'http://inference.local/v1/chat/completions',
          headers: { host: 'inference.local', 'content-type': 'application/json' },
          createConnection: () => {
            const s = net.connect(r.rig.socketPath);
            s.write('PROXY TCP4 127.0.0.1 127.0.0.1 45000 3128\r\n');
            return s;
          },
        });
        req.on('response', resolve);
        req.on('error', reject);
        req.end(JSON.stringify({ model: 'm', stream: true, messages: [{ role: 'user', content: 'go' }] }));
      });
      res.pause();
      await fake.blocked();
      // Blocked while the reader reads nothing.
      const inFlight = fake.streamedBytes;
      let total = 0;
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => {
        chunks.push(c);
        total += c.length;
      });
      res.resume();
      await new Promise<void>((resolve) => res.once('end', resolve));
      // Socket buffers on the way (loopback TCP to the provider tunes itself up to a few MiB) and
      // high-water marks: bounded, and far from the whole answer (~34 MB).
      expect(total).toBeGreaterThan(30e6);
      expect(inFlight).toBeLessThan(16 * 2 ** 20);
      const events = parseSse(Buffer.concat(chunks).toString('utf8'));
      expect(events.length).toBe(1 + 'You said: go'.length / 4 + FILLER + 1 + 1); // role, text, filler, finish, [DONE]
      expect(events.at(-1)!.data).toBe('[DONE]');
    } finally {
      fake.fillerDeltas = 0;
    }
  });
});

describe('timeouts', () => {
  it('default to minutes, not 60 s', () => {
    const parsed = parsePolicy(
      'version: 1\ninference:\n  routes:\n    a: { provider: p, model: m }\n    b: { provider: p, model: m, timeout: 2h, idle_timeout: 90s }\n',
      't.yaml',
    );
    if (!parsed.ok) throw new Error(parsed.diagnostics[0]!.message);
    const t = routeTable(parsed.policy.inference!);
    expect(DEFAULT_TIMEOUT_MS).toBe(30 * 60_000);
    expect(DEFAULT_IDLE_TIMEOUT_MS).toBe(10 * 60_000);
    expect(t.routes.get('a')).toMatchObject({ timeoutMs: 30 * 60_000, idleTimeoutMs: 10 * 60_000 });
    expect(t.routes.get('b')).toMatchObject({ timeoutMs: 2 * 3_600_000, idleTimeoutMs: 90_000 });
  });

  it('a provider silent for longer than idle_timeout ends the call with 504', async () => {
    const slow = await startFake({ kind: 'openai', firstByteDelayMs: 3_000 });
    const rr = await startRouterRig(
      policy(`  routes:
    m: { provider: vllm, endpoint: "${slow.url}", model: m, idle_timeout: 200ms }`),
    );
    try {
      const res = await rr.call('/v1/chat/completions', {
        model: 'm',
        messages: [{ role: 'user', content: 'x' }],
      });
      expect(res.status).toBe(504);
      expect(res.json()).toMatchObject({
        error: { code: 'timeout', message: expect.stringContaining('idle_timeout') },
      });
    } finally {
      await rr.close();
      await slow.close();
    }
  });
});
