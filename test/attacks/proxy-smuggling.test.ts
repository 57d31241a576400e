/**
 * Request smuggling through the egress proxy, from inside a real sandbox: heads that two HTTP
 * parsers could read differently (beyond CL+TE, which test/network/denials.test.ts has), requests
 * pipelined behind a refused one, a request hidden in a body, and virtual-host confusion inside a
 * tunnel (SNI or Host other than the CONNECT host).
 *
 * The proxy never forwards a head verbatim: it parses strictly, refuses what is ambiguous, answers
 * and closes. Each case checks the answer, the audit event with its reason, and that the upstream
 * never saw the smuggled request; a baseline shows the well-formed version of the same request
 * goes through.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startUpstreams, type Upstreams } from '../proxy/harness.js';
import {
  binaryOf,
  findings,
  python,
  py,
  reasonOf,
  refusalFrom,
  refusals,
  runInside,
  type Outcome,
} from './proxy-sandbox.js';

let up: Upstreams;
beforeAll(async () => {
  up = await startUpstreams();
});
afterAll(() => up.close());

const NAMES = ['api.test', 'raw.test'];

function network(): string {
  return `  api:
    name: api
    endpoints:
      - { host: api.test, port: ${up.httpPort}, protocol: rest, access: full }
      - host: api.test
        port: ${up.httpsPort}
        protocol: rest
        rules:
          - allow: { method: GET, path: "/repos/**" }
      - { host: raw.test, port: ${up.httpsPort}, access: full }
      - { host: raw.test, port: ${up.httpPort}, access: full }
    binaries: [ { path: /usr/bin/python3.11 } ]
`;
}

const inside = (body: string): Promise<Outcome> =>
  runInside({ network: network(), up, names: NAMES }, python(body));

const seen = (path: string): boolean => up.seen.some((s) => s.url.startsWith(path));

describe('malformed heads: refused before anything is forwarded', () => {
  // [name, the request's head lines after the request line, expected reason]
  const cases: [string, string, RegExp][] = [
    [
      'duplicate Content-Length fields with different values',
      'Content-Length: 5\r\nContent-Length: 6',
      /differing Content-Length/,
    ],
    ['one Content-Length field listing different values', 'Content-Length: 5, 6', /differing Content-Length/],
    ['a signed Content-Length', 'Content-Length: +5', /invalid Content-Length/],
    [
      'Transfer-Encoding: chunked, identity',
      'Transfer-Encoding: chunked, identity',
      /does not end in chunked/,
    ],
    ['Transfer-Encoding: identity, chunked', 'Transfer-Encoding: identity, chunked', /only "chunked"/],
    [
      'two Transfer-Encoding fields',
      'Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked',
      /only "chunked"/,
    ],
    ['a quoted "chunked"', 'Transfer-Encoding: "chunked"', /does not end in chunked/],
    // A no-break space (0xA0) is no whitespace to HTTP, but String.trim strips it: "chunked\xa0"
    // framed as chunked here and as something else upstream.
    ['"chunked" and a no-break space', 'Transfer-Encoding: chunked\u00a0', /does not end in chunked/],
    ['a Content-Length and a no-break space', 'Content-Length: 5\u00a0', /invalid Content-Length/],
    ['obs-fold (a header value continued on the next line)', 'X-A: 1\r\n chunked', /obs-fold/],
    ['a bare LF ending a header line', 'X-A: 1\nTransfer-Encoding: chunked', /bare LF/],
    ['a bare CR inside a header value', 'X-A: 1\rTransfer-Encoding: chunked', /bare CR/],
    ['a NUL inside a header value', 'X-A: 1\u0000', /control character/],
    ['whitespace between a field name and its colon', 'Transfer-Encoding : chunked', /field name/],
    ['a head over 16 KiB', `X-Pad: ${'a'.repeat(20 * 1024)}`, /too large/],
    [
      'more than 128 header fields',
      Array.from({ length: 130 }, (_, i) => `X-${i}: 1`).join('\r\n'),
      /too many/,
    ],
  ];
  let o: Outcome;
  beforeAll(async () => {
    const requests = cases.map(([, lines], i) => [
      `POST http://api.test:${up.httpPort}/smuggle-${i} HTTP/1.1\r\nHost: api.test:${up.httpPort}\r\n${lines}\r\n\r\n` +
        `0\r\n\r\nGET http://api.test:${up.httpPort}/smuggled-${i} HTTP/1.1\r\nHost: api.test:${up.httpPort}\r\n\r\n`,
    ]);
    o = await inside(
      `for i, r in enumerate(${py(requests)}): exchange(r, str(i))\n` +
        `exchange([${py(`POST http://api.test:${up.httpPort}/well-formed HTTP/1.1\r\nHost: api.test:${up.httpPort}\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello`)}], 'baseline')`,
    );
  });

  it('baseline: the same POST with one well-formed Content-Length is forwarded', () => {
    const base = o.results.find((r) => r.label === 'baseline');
    expect(base?.responses.map((r) => r.status)).toEqual([200]);
    expect(JSON.parse(base?.responses[0]?.body ?? '{}')).toMatchObject({ url: '/well-formed', size: 5 });
  });

  cases.forEach(([name, , reason], i) => {
    it(`${name}: 4xx/5xx answer, audited with its reason, nothing forwarded`, () => {
      const r = o.results.find((x) => x.label === String(i));
      expect(r?.responses).toHaveLength(1);
      expect([400, 431, 501]).toContain(r?.responses[0]?.status);
      expect(JSON.parse(r?.responses[0]?.body ?? '{}')).toMatchObject({ error: 'bad_request' });
      expect(r?.end).toBe('closed');
      const event = refusalFrom(o.audit, r?.port);
      expect(reasonOf(event)).toMatch(/^malformed request: /);
      expect(reasonOf(event)).toMatch(reason);
      expect(binaryOf(event)).toBe('/usr/bin/python3.11');
      expect(seen(`/smuggle-${i}`) || seen(`/smuggled-${i}`)).toBe(false);
    });
  });
});

describe('requests that ride behind or inside another', () => {
  it('a request pipelined behind a refused one is never forwarded (forward proxy); two allowed ones both are', async () => {
    const req = (host: string, path: string, close = false) =>
      `GET http://${host}:${up.httpPort}${path} HTTP/1.1\r\nHost: ${host}:${up.httpPort}\r\n${close ? 'Connection: close\r\n' : ''}\r\n`;
    const o = await inside(
      `exchange([${py(req('denied.test', '/first') + req('api.test', '/behind-denied', true))}], 'denied')\n` +
        `exchange([${py(req('api.test', '/pipelined-1') + req('api.test', '/pipelined-2', true))}], 'baseline')`,
    );
    const [denied, baseline] = o.results;
    expect(denied?.responses.map((r) => r.status)).toEqual([403]);
    expect(denied?.end).toBe('closed');
    expect(seen('/behind-denied')).toBe(false);
    expect(refusals(o.audit, 4001).map((e) => e.message)).toEqual([
      expect.stringMatching(/denied\.test:\d+/),
    ]);
    expect(baseline?.responses.map((r) => r.status)).toEqual([200, 200]);
    expect(seen('/pipelined-1') && seen('/pipelined-2')).toBe(true);
  });

  it('inside a terminated TLS tunnel: a request pipelined behind one the rules refuse is never forwarded', async () => {
    const get = (path: string) => `GET ${path} HTTP/1.1\r\nHost: api.test\r\n\r\n`;
    const o = await inside(
      `s = tunnel('api.test:${up.httpsPort}')\n` +
        `converse(over_tls(s, 'api.test'), [${py(get('/admin') + get('/repos/behind-admin'))}], 'tls')`,
    );
    expect(o.results[0]?.responses.map((r) => r.status)).toEqual([403]);
    expect(seen('/repos/behind-admin')).toBe(false);
    const refused = refusals(o.audit, 4002);
    expect(refused.map((e) => e.message)).toEqual([expect.stringMatching(/GET api\.test\/admin/)]);
  });

  it('inside a terminated TLS tunnel: a bare LF or an oversized head after an allowed request is answered and audited', async () => {
    const ok = 'GET /repos/before HTTP/1.1\r\nHost: api.test\r\n\r\n';
    const o = await inside(
      [
        `for label, bad in (('lf', ${py('GET /repos/lf HTTP/1.1\nHost: api.test\r\n\r\n')}), ('big', ${py(`GET /repos/big HTTP/1.1\r\nHost: api.test\r\nX-Pad: ${'a'.repeat(20 * 1024)}\r\n\r\n`)})):`,
        `    converse(over_tls(tunnel('api.test:${up.httpsPort}'), 'api.test'), [${py(ok)} + bad], label)`,
      ].join('\n'),
    );
    expect(o.results.map((r) => r.responses.map((x) => x.status))).toEqual([
      [200, 400],
      [200, 431],
    ]);
    expect(refusals(o.audit, 4002).map(reasonOf)).toEqual([
      'malformed request: bare LF in message head',
      'malformed request: message head too large',
    ]);
    expect(seen('/repos/lf') || seen('/repos/big')).toBe(false);
  });

  it('a request hidden in a Content-Length body stays body: the upstream sees one POST', async () => {
    const hidden = `GET /hidden-in-body HTTP/1.1\r\nHost: api.test\r\n\r\n`;
    const o = await inside(
      `exchange([${py(`POST http://api.test:${up.httpPort}/carrier HTTP/1.1\r\nHost: api.test:${up.httpPort}\r\nContent-Length: ${hidden.length}\r\nConnection: close\r\n\r\n${hidden}`)}])`,
    );
    expect(o.results[0]?.responses.map((r) => r.status)).toEqual([200]);
    expect(JSON.parse(o.results[0]?.responses[0]?.body ?? '{}')).toMatchObject({
      url: '/carrier',
      size: hidden.length,
    });
    expect(seen('/hidden-in-body')).toBe(false);
  });

  it('a malformed chunk ends the connection: the request after it is never forwarded', async () => {
    const o = await inside(
      `exchange([${py(
        `POST http://api.test:${up.httpPort}/chunked-carrier HTTP/1.1\r\nHost: api.test:${up.httpPort}\r\nTransfer-Encoding: chunked\r\n\r\n` +
          `5\r\nhello\r\nZZ\r\n\r\nGET http://api.test:${up.httpPort}/after-bad-chunk HTTP/1.1\r\nHost: api.test:${up.httpPort}\r\n\r\n`,
      )}])`,
    );
    expect(o.results[0]?.responses.some((r) => r.status === 200)).toBe(false);
    expect(seen('/after-bad-chunk')).toBe(false);
  });
});

describe('virtual-host confusion inside a tunnel', () => {
  it('terminated TLS with an SNI other than the CONNECT host: closed with a finding, nothing forwarded', async () => {
    const o = await inside(
      `s = over_tls(tunnel('api.test:${up.httpsPort}'), 'evil.test')\n` +
        `converse(s, [${py('GET /repos/sni-evil HTTP/1.1\r\nHost: api.test\r\n\r\n')}])`,
    );
    expect(o.results[0]?.responses).toEqual([]);
    expect(findings(o.audit)).toEqual(['sni-mismatch']);
    expect(seen('/repos/sni-evil')).toBe(false);
  });

  it('terminated TLS with Host: evil.test after CONNECT api.test: 403, host-mismatch finding; Host: api.test passes', async () => {
    const get = (path: string, host: string) =>
      `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`;
    const o = await inside(
      `converse(over_tls(tunnel('api.test:${up.httpsPort}'), 'api.test'), [${py(get('/repos/vhost-evil', 'evil.test'))}], 'evil')\n` +
        `converse(over_tls(tunnel('api.test:${up.httpsPort}'), 'api.test'), [${py(get('/repos/vhost-ok', 'api.test'))}], 'ok')`,
    );
    const [evil, ok] = o.results;
    expect(evil?.responses.map((r) => r.status)).toEqual([403]);
    expect(JSON.parse(evil?.responses[0]?.body ?? '{}')).toMatchObject({ error: 'policy_denied' });
    expect(findings(o.audit)).toEqual(['host-mismatch']);
    expect(reasonOf(refusals(o.audit, 4002)[0])).toMatch(/Host header does not match the CONNECT host/);
    expect(seen('/repos/vhost-evil')).toBe(false);
    expect(ok?.responses.map((r) => r.status)).toEqual([200]);
  });

  it('a raw tunnel: a ClientHello without SNI for a DNS name is closed (sni-missing); with the right SNI it passes', async () => {
    const o = await inside(
      [
        'for label, sni in (("none", None), ("right", "raw.test")):',
        `    s = tunnel('raw.test:${up.httpsPort}')`,
        '    try:',
        '        t = over_tls(s, sni)',
        `        converse(t, [${py('GET /raw-sni HTTP/1.1\r\nHost: raw.test\r\nConnection: close\r\n\r\n')}], label)`,
        '    except (ssl.SSLError, OSError):',
        '        print(json.dumps(dict(label=label, responses=[], end="reset")), flush=True)',
      ].join('\n'),
    );
    const [none, right] = o.results;
    expect(none?.responses).toEqual([]);
    expect(findings(o.audit)).toEqual(['sni-missing']);
    // The raw tunnel reaches the upstream's own TLS (the proxy does not terminate it).
    expect(right?.responses.map((r) => r.status)).toEqual([200]);
  });

  it('plain HTTP inside a raw tunnel with Host: evil.test: 403 and a finding; Host: raw.test passes', async () => {
    const get = (host: string) =>
      `GET /raw-plain HTTP/1.1\r\nHost: ${host}:${up.httpPort}\r\nConnection: close\r\n\r\n`;
    const o = await inside(
      `converse(tunnel('raw.test:${up.httpPort}'), [${py(get('evil.test'))}], 'evil')\n` +
        `converse(tunnel('raw.test:${up.httpPort}'), [${py(get('raw.test'))}], 'ok')`,
    );
    expect(o.results.map((r) => r.responses.map((x) => x.status))).toEqual([[403], [200]]);
    expect(findings(o.audit)).toEqual(['host-mismatch']);
  });

  it('a CONNECT whose Host header names another host: 400, audited', async () => {
    const o = await inside(
      `exchange([${py(`CONNECT api.test:${up.httpsPort} HTTP/1.1\r\nHost: evil.test:${up.httpsPort}\r\n\r\n`)}])`,
    );
    expect(o.results[0]?.responses.map((r) => r.status)).toEqual([400]);
    expect(reasonOf(refusals(o.audit, 4001)[0])).toMatch(/Host header differs from the CONNECT target/);
  });
});
