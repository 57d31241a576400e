/**
 * Naming a destination the policy did not mean, from inside a real sandbox: the relay's own address
 * and other loopback ports (by CONNECT and by absolute-form request), IP literals in the forms
 * resolvers accept (decimal, octal, hex, shortened, IPv4-mapped IPv6), wildcards against IPs, IDN
 * homographs, trailing dots and case, and absolute-form requests to hosts outside the policy.
 *
 * Three parts of the proxy answer: the host canonicaliser (a name is lower-case ASCII with at most
 * one trailing dot; the only IPv4 literal is the dotted quad), the policy (exact names and
 * wildcards, never an IP through a wildcard), and the SSRF guard (loopback and link-local are
 * refused even when the policy lists them, unless the operator trusts that exact ip:port).
 */
import { createServer, type Server } from 'node:net';
import { domainToASCII } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startUpstreams, type Upstreams } from '../proxy/harness.js';
import { runCli } from '../helpers/network.js';
import { policyFile } from '../helpers/sandbox.js';
import { FS_POLICY } from '../helpers/network.js';
import {
  findings,
  hostOf,
  python,
  py,
  reasonOf,
  refusalFrom,
  refusals,
  runInside,
  utf8Wire,
  type Exchange,
  type Outcome,
} from './proxy-sandbox.js';

let up: Upstreams;
/** A host service on loopback that no sandbox should reach: it counts the connections it gets. */
let service: Server;
let servicePort = 0;
let serviceHits = 0;
const serviceSockets = new Set<import('node:net').Socket>();

beforeAll(async () => {
  up = await startUpstreams();
  service = createServer((s) => {
    serviceHits++;
    serviceSockets.add(s);
    s.on('close', () => serviceSockets.delete(s));
    s.end('HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\nservice');
  });
  await new Promise<void>((r) => service.listen(0, '127.0.0.1', r));
  servicePort = (service.address() as { port: number }).port;
});
afterAll(async () => {
  await up.close();
  for (const s of serviceSockets) s.destroy();
  await new Promise((r) => service.close(r));
});

const NAMES = ['api.test', 'a.wild.test'];

function apiOnly(): string {
  return `  api:
    name: api
    endpoints:
      - { host: api.test, port: ${up.httpPort}, protocol: rest, access: full }
      - { host: api.test, port: ${up.httpsPort}, protocol: rest, access: full }
    binaries: [ { path: /usr/bin/python3.11 }, { path: /usr/bin/curl } ]
`;
}

const inside = (body: string, network = apiOnly(), options: string[] = []): Promise<Outcome> =>
  runInside({ network, up, names: NAMES, options }, python(body));

const connect = (authority: string, label = authority): string =>
  `probe_connect(${py(authority)}, ${py(label)})`;
const get = (authority: string, path: string, label = authority, host = authority): string =>
  `exchange([${py(`GET http://${authority}${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`)}], ${py(label)})`;

const statuses = (o: Outcome): Record<string, number[]> =>
  Object.fromEntries(o.results.map((r: Exchange) => [r.label, r.responses.map((x) => x.status)]));
const seen = (path: string): boolean => up.seen.some((s) => s.url.startsWith(path));

describe('the relay, the proxy and other loopback ports', () => {
  it('CONNECT or GET to 127.0.0.1:3128, [::1]:3128, localhost and other loopback ports: 403 by policy, audited', async () => {
    const targets = [
      '127.0.0.1:3128',
      '[::1]:3128',
      'localhost:3128',
      `127.0.0.1:${servicePort}`,
      `127.0.0.2:${servicePort}`,
      `[::1]:${servicePort}`,
    ];
    const o = await inside(
      [
        ...targets.map((t) => connect(t, `connect ${t}`)),
        ...targets.map((t) => get(t, '/', `get ${t}`)),
        connect(`api.test:${up.httpPort}`, 'baseline'),
        // The relay's IPv6 listener leads to the same proxy and the same decisions.
        `converse(socket.create_connection(('::1', 3128)), [${py('CONNECT 127.0.0.1:3128 HTTP/1.1\r\nHost: 127.0.0.1:3128\r\n\r\n')}], 'relay v6')`,
        `converse(socket.create_connection(('::1', 3128)), [${py(`GET http://api.test:${up.httpPort}/via-v6-relay HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n`)}], 'baseline v6')`,
      ].join('\n'),
    );
    for (const t of targets) {
      for (const kind of ['connect', 'get']) {
        const r = o.results.find((x) => x.label === `${kind} ${t}`);
        expect(
          r?.responses.map((x) => x.status),
          `${kind} ${t}`,
        ).toEqual([403]);
        expect(JSON.parse(r?.responses[0]?.body ?? '{}')).toMatchObject({ error: 'policy_denied' });
        expect(reasonOf(refusalFrom(o.audit, r?.port)), `${kind} ${t}`).toMatch(/^no policy allows/);
      }
    }
    expect(statuses(o)).toMatchObject({ baseline: [200], 'relay v6': [403], 'baseline v6': [200] });
    const v6 = o.results.find((x) => x.label === 'relay v6');
    expect(reasonOf(refusalFrom(o.audit, v6?.port))).toMatch(/^no policy allows 127\.0\.0\.1:3128/);
    expect(serviceHits).toBe(0);
  });

  it('listed in the policy, loopback is still refused by the SSRF guard; --allow-local opens exactly one ip:port', async () => {
    const network = `  loop:
    name: loop
    endpoints:
      - { host: 127.0.0.1, port: 3128, access: full }
      - { host: 127.0.0.1, port: ${servicePort}, access: full }
      - { host: "::1", port: ${servicePort}, access: full }
      - { host: localhost, port: ${servicePort}, access: full }
`;
    const body = [
      connect('127.0.0.1:3128', 'relay port'),
      connect(`127.0.0.1:${servicePort}`, 'v4'),
      connect(`[::1]:${servicePort}`, 'v6'),
      connect(`localhost:${servicePort}`, 'localhost'),
      get(`127.0.0.1:${servicePort}`, '/', 'get v4'),
    ].join('\n');
    const guarded = await inside(body, network, ['--resolve', 'localhost=127.0.0.1']);
    expect(statuses(guarded)).toEqual({
      'relay port': [403],
      v4: [403],
      v6: [403],
      localhost: [403],
      'get v4': [403],
    });
    for (const r of guarded.results)
      expect(reasonOf(refusalFrom(guarded.audit, r.port)), String(r.label)).toMatch(
        /^address (127\.0\.0\.1|::1) is loopback/,
      );
    expect(serviceHits).toBe(0);

    // Without the guard's refusal (the operator trusts 127.0.0.1:<service>), the same requests
    // reach the service: it is the guard that stopped them, and it trusts nothing more.
    const trusted = await inside(body, network, [
      '--resolve',
      'localhost=127.0.0.1',
      '--allow-local',
      `127.0.0.1:${servicePort}`,
    ]);
    expect(statuses(trusted)).toEqual({
      'relay port': [403],
      v4: [200],
      v6: [403],
      localhost: [200],
      'get v4': [200],
    });
    expect(serviceHits).toBe(3);
    serviceHits = 0;
  });
});

describe('IP literals', () => {
  // Forms that getaddrinfo, inet_aton or a URL parser turn into 127.0.0.1 (where api.test points).
  const nonCanonical = [
    '2130706433',
    '0177.0.0.1',
    '0x7f.1',
    '0x7f000001',
    '127.1',
    '127.0.1',
    '017700000001',
  ];
  // Forms the policy does not list: refused by policy (the guard would judge mapped forms as IPv4).
  const otherForms = [
    '127.0.0.1',
    '[::ffff:127.0.0.1]',
    '[::ffff:7f00:1]',
    '[0:0:0:0:0:ffff:7f00:1]',
    '[::127.0.0.1]',
    '[64:ff9b::7f00:1]',
  ];
  let o: Outcome;
  beforeAll(async () => {
    const all = [...nonCanonical, ...otherForms];
    o = await inside(
      [
        connect(`api.test:${up.httpPort}`, 'baseline connect'),
        get(`api.test:${up.httpPort}`, '/by-name', 'baseline get'),
        ...all.map((h) => connect(`${h}:${up.httpPort}`, `connect ${h}`)),
        ...all.map((h, i) => get(`${h}:${up.httpPort}`, `/by-ip-${i}`, `get ${h}`)),
      ].join('\n'),
    );
  });

  it('baseline: the allowed name reaches the upstream (127.0.0.1) by CONNECT and by GET', () => {
    expect(statuses(o)['baseline connect']).toEqual([200]);
    expect(statuses(o)['baseline get']).toEqual([200]);
    expect(seen('/by-name')).toBe(true);
  });

  it.each(nonCanonical)('%s: 400 "non-canonical IPv4 literal" by CONNECT and by GET, audited', (h) => {
    expect(statuses(o)[`connect ${h}`]).toEqual([400]);
    expect(statuses(o)[`get ${h}`]).toEqual([400]);
    const c = o.results.find((r) => r.label === `connect ${h}`);
    expect(reasonOf(refusalFrom(o.audit, c?.port))).toMatch(/non-canonical IPv4 literal/);
  });

  it.each(otherForms)('%s: 403 by policy (the name is allowed, not this address), audited', (h) => {
    expect(statuses(o)[`connect ${h}`]).toEqual([403]);
    expect(statuses(o)[`get ${h}`]).toEqual([403]);
    for (const kind of ['connect', 'get']) {
      const r = o.results.find((x) => x.label === `${kind} ${h}`);
      expect(reasonOf(refusalFrom(o.audit, r?.port))).toMatch(/^no policy allows/);
    }
  });

  it('every refused GET is audited, and none reached the upstream', () => {
    const byRequest = refusals(o.audit, 4002).filter((e) => /non-canonical IPv4/.test(reasonOf(e)));
    expect(byRequest).toHaveLength(nonCanonical.length);
    expect(up.seen.filter((s) => s.url.startsWith('/by-ip-'))).toEqual([]);
  });
});

describe('wildcards never match an IP', () => {
  it('the loader refuses a wildcard over numbers or a bare TLD, with a position', async () => {
    for (const host of ['*.0.0.1', '**.0.0.1', '*.1', '**.127.0.0.1']) {
      const file = policyFile(
        `${FS_POLICY}network_policies:\n  w:\n    name: w\n    endpoints:\n      - { host: "${host}", port: 80 }\n`,
      );
      const r = await runCli(['run', '--policy', file, '--', 'true']);
      expect(r.status, host).toBe(2);
      expect(r.stderr, host).toMatch(/policy\.yaml:\d+:\d+: .*(numbers|top-level domain)/);
    }
  });

  it('**.wild.test admits a.wild.test, and no IP literal; a host-less endpoint guards IPs with allowed_ips', async () => {
    const network = `  wild:
    name: wild
    endpoints:
      - { host: "**.wild.test", port: ${up.httpPort}, access: full }
      - { port: ${up.httpsPort}, allowed_ips: [10.0.0.0/8], access: full }
`;
    const o = await inside(
      [
        connect(`a.wild.test:${up.httpPort}`, 'name'),
        connect(`127.0.0.1:${up.httpPort}`, 'v4'),
        connect(`[::1]:${up.httpPort}`, 'v6'),
        connect(`2130706433:${up.httpPort}`, 'decimal'),
        connect(`127.0.0.1:${up.httpsPort}`, 'host-less'),
      ].join('\n'),
      network,
    );
    expect(statuses(o)).toEqual({ name: [200], v4: [403], v6: [403], decimal: [400], 'host-less': [403] });
    const hostless = o.results.find((r) => r.label === 'host-less');
    expect(reasonOf(refusalFrom(o.audit, hostless?.port))).toMatch(/outside the endpoint's allowed_ips/);
  });
});

describe('IDN homographs, trailing dots and case', () => {
  const homograph = 'аpi.test'; // U+0430 CYRILLIC SMALL LETTER A
  const punycode = domainToASCII(homograph); // xn--pi-6kc.test

  it('a Cyrillic "аpi.test" never matches api.test: raw UTF-8 is 400, its punycode 403, curl (libidn2) 403', async () => {
    const t = `${utf8Wire(homograph)}:${up.httpPort}`;
    const o = await inside(
      [
        connect(t, 'utf8 connect'),
        get(t, '/homograph', 'utf8 get'),
        connect(`${punycode}:${up.httpPort}`, 'punycode'),
        connect(`${punycode.toUpperCase()}:${up.httpPort}`, 'PUNYCODE'),
        connect(`${utf8Wire('ａpi.test')}:${up.httpPort}`, 'fullwidth'),
        `s = over_tls(tunnel('api.test:${up.httpsPort}'), 'api.test')`,
        `converse(s, [${py(`GET /homograph-host HTTP/1.1\r\nHost: ${utf8Wire(homograph)}\r\n\r\n`)}], 'host header')`,
        'import subprocess',
        `subprocess.run(['curl', '-sS', '-o', '/dev/null', '-w', 'curl %{http_code}\\n', 'http://${homograph}:${up.httpPort}/'])`,
      ].join('\n'),
    );
    expect(statuses(o)).toEqual({
      'utf8 connect': [400],
      'utf8 get': [400],
      punycode: [403],
      PUNYCODE: [403],
      fullwidth: [400],
      'host header': [403],
    });
    expect(o.stdout).toContain('curl 403');
    const refused = refusals(o.audit, 4001);
    expect(refused.filter((e) => hostOf(e) === punycode)).toHaveLength(3); // two CONNECTs and curl
    expect(findings(o.audit)).toEqual(['host-mismatch']);
    expect(seen('/homograph')).toBe(false);
  });

  it('"api.test." and "API.Test" are api.test (allowed, audited as api.test); "api.test..", ".api.test", "api..test" are 400', async () => {
    const o = await inside(
      ['api.test.', 'API.Test', 'api.test..', '.api.test', 'api..test']
        .map((h) => connect(`${h}:${up.httpPort}`, h))
        .join('\n'),
    );
    expect(statuses(o)).toEqual({
      'api.test.': [200],
      'API.Test': [200],
      'api.test..': [400],
      '.api.test': [400],
      'api..test': [400],
    });
    const allowed = o.audit.filter((e) => e.class_uid === 4001 && e.disposition_id === 1);
    expect(allowed.map(hostOf)).toEqual(['api.test', 'api.test']);
    for (const h of ['api.test..', '.api.test', 'api..test']) {
      const r = o.results.find((x) => x.label === h);
      expect(reasonOf(refusalFrom(o.audit, r?.port)), h).toMatch(/label/);
    }
  });
});

describe('absolute-form and origin-form requests straight to the proxy', () => {
  it('GET http://not-allowed.test/ gets the 403 JSON and a 4001 refusal; the allowed host passes', async () => {
    const o = await inside(
      [
        get('not-allowed.test', '/', 'disallowed'),
        get(`not-allowed.test:${up.httpPort}`, '/x', 'disallowed port'),
        get(`api.test:${up.httpPort}`, '/absolute-ok', 'allowed'),
      ].join('\n'),
    );
    expect(statuses(o)).toEqual({ disallowed: [403], 'disallowed port': [403], allowed: [200] });
    const r = o.results.find((x) => x.label === 'disallowed');
    const body = JSON.parse(r?.responses[0]?.body ?? '{}') as Record<string, unknown>;
    expect(body).toMatchObject({
      error: 'policy_denied',
      host: 'not-allowed.test',
      port: 80,
      binary: '/usr/bin/python3.11',
    });
    expect(String(body.hint)).toMatch(
      /^carapace policy explain POLICY_FILE --host not-allowed\.test --port 80 --binary \/usr\/bin\/python3\.11 /,
    );
    expect(hostOf(refusalFrom(o.audit, r?.port))).toBe('not-allowed.test');
  });

  it('an allowed URL with the Host of another, https:// in absolute-form, and origin-form: refused', async () => {
    const o = await inside(
      [
        get(`api.test:${up.httpPort}`, '/vhost', 'host differs', 'not-allowed.test'),
        `exchange([${py(`GET https://api.test:${up.httpsPort}/ HTTP/1.1\r\nHost: api.test:${up.httpsPort}\r\n\r\n`)}], 'https')`,
        `exchange([${py(`GET /origin HTTP/1.1\r\nHost: api.test:${up.httpPort}\r\n\r\n`)}], 'origin')`,
      ].join('\n'),
    );
    expect(statuses(o)).toEqual({ 'host differs': [403], https: [400], origin: [400] });
    expect(findings(o.audit)).toEqual(['host-mismatch']);
    const origin = o.results.find((x) => x.label === 'origin');
    expect(reasonOf(refusalFrom(o.audit, origin?.port))).toMatch(/origin-form/);
    expect(seen('/vhost') || seen('/origin')).toBe(false);
  });
});
