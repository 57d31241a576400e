/**
 * Reaching a service on the host, the OpenShell way (issue 9, item 10), from inside a real sandbox
 * with no --allow-local: a policy endpoint whose host is `host.openshell.internal` (or our alias
 * `host.carapace.internal`) reaches the host's loopback on that port, because the policy names it.
 * Without such an entry the name is refused by policy (403, audited); a wildcard over it does not
 * count; and the SSRF guard keeps refusing every other way to the same loopback service (its IP
 * literal, `localhost`, a name resolving to 127.0.0.1) and the host-local name on another port.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startUpstreams, type Upstreams } from '../proxy/harness.js';
import {
  hostOf,
  python,
  py,
  reasonOf,
  refusalFrom,
  refusals,
  runInside,
  type Outcome,
} from './proxy-sandbox.js';

let up: Upstreams;
/** A model server on the host's loopback (Ollama, vLLM): answers every request with its path. */
let model: Server;
let modelPort = 0;
let other: Server;
let otherPort = 0;
const hits: string[] = [];
const sockets = new Set<Socket>();

function httpService(tag: string): Server {
  return createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
    let head = '';
    s.on('data', (d: Buffer) => {
      head += d.toString('latin1');
      if (!head.includes('\r\n\r\n')) return;
      const path = head.split(' ')[1] ?? '';
      hits.push(`${tag} ${path}`);
      const body = `${tag} ${path}`;
      s.end(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`);
    });
  });
}

beforeAll(async () => {
  up = await startUpstreams();
  model = httpService('model');
  other = httpService('other');
  await new Promise<void>((r) => model.listen(0, '127.0.0.1', r));
  await new Promise<void>((r) => other.listen(0, '127.0.0.1', r));
  modelPort = (model.address() as { port: number }).port;
  otherPort = (other.address() as { port: number }).port;
});
afterAll(async () => {
  await up.close();
  for (const s of sockets) s.destroy();
  await Promise.all([new Promise((r) => model.close(r)), new Promise((r) => other.close(r))]);
});

/** A run whose policy has `network` and no operator trust at all for the host services. */
function inside(network: string, body: string): Promise<Outcome> {
  // upstreamOptions (via runInside) trusts the harness's upstream ports only, never the services.
  // The host-local name is in the hosts map too, so that a wildcard's lookup never asks DNS.
  return runInside({ network, up, names: ['loop.test', 'host.openshell.internal'] }, python(body));
}

const get = (authority: string, path: string, label: string): string =>
  `exchange([${py(`GET http://${authority}${path} HTTP/1.1\r\nHost: ${authority}\r\nConnection: close\r\n\r\n`)}], ${py(label)})`;
const statuses = (o: Outcome): Record<string, number[]> =>
  Object.fromEntries(o.results.map((r) => [r.label, r.responses.map((x) => x.status)]));

describe('host.openshell.internal', () => {
  it('reaches a host loopback server when a policy entry names it; curl through HTTP_PROXY too', async () => {
    const o = await runInside(
      {
        network: `  ollama:
    name: ollama
    endpoints:
      - { host: host.openshell.internal, port: ${modelPort}, access: full }
      - { host: host.carapace.internal, port: ${modelPort}, access: full }
`,
        up,
        names: [],
      },
      [
        'sh',
        '-c',
        [
          `curl -sS http://host.openshell.internal:${modelPort}/api/tags`,
          'echo',
          `curl -sS http://host.carapace.internal:${modelPort}/v1/models`,
        ].join('; '),
      ],
    );
    expect(o.stderr).toBe('');
    expect(o.stdout.trim().split('\n')).toEqual(['model /api/tags', 'model /v1/models']);
    const allowed = o.audit.filter((e) => e.class_uid === 4001 && e.disposition_id === 1);
    expect(allowed.map(hostOf)).toEqual(['host.openshell.internal', 'host.carapace.internal']);
    expect(allowed.map((e) => (e.dst_endpoint as { ip?: string }).ip)).toEqual(['127.0.0.1', '127.0.0.1']);
  });

  it('is refused (403, audited) when no entry names it, and a wildcard over it does not count', async () => {
    const before = hits.length;
    const none = await inside(
      `  api:
    name: api
    endpoints:
      - { host: api.test, port: ${up.httpPort}, access: full }
`,
      get(`host.openshell.internal:${modelPort}`, '/unnamed', 'unnamed'),
    );
    expect(statuses(none)).toEqual({ unnamed: [403] });
    const r = none.results[0];
    expect(hostOf(refusalFrom(none.audit, r?.port))).toBe('host.openshell.internal');
    expect(reasonOf(refusalFrom(none.audit, r?.port))).toMatch(
      /^no policy allows host\.openshell\.internal:/,
    );

    const wildcard = await inside(
      `  wild:
    name: wild
    endpoints:
      - { host: "*.openshell.internal", port: ${modelPort}, access: full }
`,
      get(`host.openshell.internal:${modelPort}`, '/wildcard', 'wildcard'),
    );
    expect(statuses(wildcard)).toEqual({ wildcard: [403] });
    expect(refusals(wildcard.audit, 4001)).toHaveLength(1);
    expect(hits.slice(before)).toEqual([]);
  });

  it('unlocks nothing else: the same service by IP, localhost or a name resolving to loopback, and the host-local name on another port, stay refused', async () => {
    const before = hits.length;
    const o = await inside(
      `  ollama:
    name: ollama
    endpoints:
      - { host: host.openshell.internal, port: ${modelPort}, access: full }
      - { host: 127.0.0.1, port: ${modelPort}, access: full }
      - { host: localhost, port: ${modelPort}, access: full }
      - { host: loop.test, port: ${modelPort}, access: full }
`,
      [
        get(`127.0.0.1:${modelPort}`, '/ip', 'ip'),
        get(`localhost:${modelPort}`, '/localhost', 'localhost'),
        get(`loop.test:${modelPort}`, '/name', 'name'),
        get(`host.openshell.internal:${otherPort}`, '/other-port', 'other port'),
        get(`host.openshell.internal:${modelPort}`, '/named', 'named'),
      ].join('\n'),
    );
    expect(statuses(o)).toEqual({
      ip: [403],
      localhost: [403],
      name: [403],
      'other port': [403],
      named: [200],
    });
    for (const label of ['ip', 'localhost', 'name']) {
      const r = o.results.find((x) => x.label === label);
      expect(reasonOf(refusalFrom(o.audit, r?.port)), label).toMatch(/is loopback/);
      // The hint names what does work: the policy's host-local name, or the operator's trust.
      const hint = String((JSON.parse(r?.responses[0]?.body ?? '{}') as { hint?: string }).hint);
      expect(hint, label).toContain(`host.openshell.internal:${modelPort}`);
      expect(hint, label).toContain('--allow-local');
    }
    expect(hits.slice(before)).toEqual(['model /named']);
  });
});
