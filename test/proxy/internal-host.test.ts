/**
 * The internal-host port (src/proxy/session/internal-host.ts): a name no policy grants, served by a handler
 * inside the proxy's process. Here the handler is a plain node:http server fed through a duplex
 * pair, answering with what it saw, so the tests pin down what the proxy hands it.
 */
import http from 'node:http';
import { duplexPair } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { InternalHost, InternalHostCaller } from '../../src/proxy/session/internal-host.js';
import {
  HttpReader,
  type Rig,
  compile,
  connectTunnel,
  eventsOf,
  relayConnect,
  send,
  startRig,
  tlsOverTunnel,
} from './harness.js';

const POLICY = (value: string) => `
version: 1
inference:
  routes:
    r: { provider: openai, endpoint: "http://127.0.0.1:1/v1", model: ${value} }
network_policies:
  other:
    endpoints: [ { host: api.example.test, port: 443, access: full } ]
`;

function echoHost(): InternalHost & { opened: InternalHostCaller[] } {
  const opened: InternalHostCaller[] = [];
  const callers = new WeakMap<object, InternalHostCaller>();
  const server = http.createServer((req, res) => {
    const caller = callers.get(req.socket)!;
    let size = 0;
    req.on('data', (d: Buffer) => (size += d.length));
    req.on('end', () => {
      const body = JSON.stringify({
        method: req.method,
        url: req.url,
        headers: req.headers,
        size,
        sandbox: caller.sandbox,
        binary: caller.binary,
        model: caller.policy().inference?.routes.r?.model,
        generation: caller.generation(),
      });
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(body);
    });
  });
  return {
    names: ['inference.local'],
    opened,
    open(caller) {
      opened.push(caller);
      const [mine, theirs] = duplexPair();
      callers.set(theirs, caller);
      server.emit('connection', theirs);
      return mine;
    },
  };
}

let rig: Rig;
let host: ReturnType<typeof echoHost>;

beforeAll(async () => {
  host = echoHost();
  rig = await startRig({ policy: POLICY('first'), internalHosts: [host] });
});
afterAll(() => rig.close());

const get = (path: string, h = 'inference.local', extra = ''): string =>
  `GET ${path} HTTP/1.1\r\nHost: ${h}\r\n${extra}\r\n`;

describe('an internal host', () => {
  it('is served over TLS with the sandbox CA, though no policy entry names it; one 4001, no 4002', async () => {
    const before = eventsOf(rig.audit, 4002).length;
    const t = await connectTunnel(rig.socketPath, 'inference.local:443');
    expect(t.status).toBe(200);
    const s = await tlsOverTunnel(t, 'inference.local', rig.authority.caPem);
    const r = new HttpReader(s);
    const res = await send(r, get('/v1/models'));
    expect(res.status).toBe(200);
    expect(res.json()).toMatchObject({
      url: '/v1/models',
      sandbox: 'sb1',
      binary: '/usr/bin/curl',
      model: 'first',
      generation: 1,
    });
    const open = eventsOf(rig.audit, 4001).at(-1)!;
    expect(open).toMatchObject({
      disposition: 'Allowed',
      dst_endpoint: { hostname: 'inference.local', port: 443 },
    });
    expect(eventsOf(rig.audit, 4002).length).toBe(before);
    s.destroy();
  });

  it('is served as plain HTTP through the forward proxy', async () => {
    const s = await relayConnect(rig.socketPath);
    const r = new HttpReader(s);
    const res = await send(r, get('http://inference.local/v1/models'));
    expect(res.status).toBe(200);
    expect(res.json()).toMatchObject({ url: '/v1/models', sandbox: 'sb1' });
    s.destroy();
  });

  it('passes credential placeholders through unsubstituted (the handler strips them) instead of refusing', async () => {
    const t = await connectTunnel(rig.socketPath, 'inference.local:443');
    const s = await tlsOverTunnel(t, 'inference.local', rig.authority.caPem);
    const res = await send(
      new HttpReader(s),
      get('/v1/x', 'inference.local', 'Authorization: Bearer carapace:cred:KEY\r\n'),
    );
    expect(res.status).toBe(200);
    expect(res.json<{ headers: Record<string, string> }>().headers.authorization).toBe(
      'Bearer carapace:cred:KEY',
    );
    s.destroy();
  });

  it('refuses other ports and protocol upgrades', async () => {
    const t = await connectTunnel(rig.socketPath, 'inference.local:8443');
    expect(t.status).toBe(403);
    expect(t.response.json()).toMatchObject({
      reason: expect.stringContaining('ports 443 (https) and 80 (http) only'),
    });
    const s = await relayConnect(rig.socketPath);
    const res = await send(
      new HttpReader(s),
      get('http://inference.local/ws', 'inference.local', 'Connection: Upgrade\r\nUpgrade: websocket\r\n'),
    );
    expect(res.status).toBe(403);
    s.destroy();
  });

  it('reads the policy generation per request: a reload applies to the next request of a kept-alive connection', async () => {
    const t = await connectTunnel(rig.socketPath, 'inference.local:443');
    const s = await tlsOverTunnel(t, 'inference.local', rig.authority.caPem);
    const r = new HttpReader(s);
    const a = await send(r, get('/a'));
    rig.sb.setGeneration(compile(POLICY('second')));
    const b = await send(r, get('/b'));
    expect(a.json()).toMatchObject({ model: 'first' });
    expect(b.json()).toMatchObject({ model: 'second' });
    s.destroy();
  });

  it('streams request bodies to the handler', async () => {
    const s = await relayConnect(rig.socketPath);
    const body = 'x'.repeat(300_000);
    const res = await send(
      new HttpReader(s),
      `POST http://inference.local/v1/chat/completions HTTP/1.1\r\nHost: inference.local\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
      'POST',
    );
    expect(res.json()).toMatchObject({ method: 'POST', size: 300_000 });
    s.destroy();
  });
});
