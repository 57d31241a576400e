/**
 * What the proxy inspects, it inspects whole (issue 10, class 5), from inside a real sandbox.
 *
 * Sniffing: in a raw tunnel the proxy serves plain HTTP request by request (Host checked) and relays
 * anything else untouched, so the agent tries to look like "anything else": a request line split
 * over two writes (the first read is `GE`), a leading empty line (servers skip it), a method longer
 * than the proxy used to look for. Each must still be seen as HTTP and judged.
 *
 * Paths: an inspected endpoint allows GET /** but denies /admin/**. The agent spells /admin the ways
 * upstream servers read as /admin: `..;` (Tomcat and Jetty drop path parameters), `;` parameters,
 * repeated slashes (nginx merges them), upper case (case-folding servers), and the escapes servers
 * disagree on (`%3B`, double encoding, overlong UTF-8). Each is refused or normalised before the
 * rules see it; the upstream never receives a request any server could read as /admin.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startUpstreams, type Upstreams } from '../proxy/harness.js';
import { findings, python, py, reasonOf, refusals, runInside, type Outcome } from './proxy-sandbox.js';

let up: Upstreams;
beforeAll(async () => {
  up = await startUpstreams();
});
afterAll(() => up.close());

function network(): string {
  return `  raw:
    name: raw
    endpoints:
      - { host: raw.test, port: ${up.httpPort}, access: full }
  l7:
    name: l7
    endpoints:
      - host: l7.test
        port: ${up.httpPort}
        protocol: rest
        rules: [ { allow: { method: GET, path: "/**" } } ]
        deny_rules: [ { method: GET, path: "/admin/**" } ]
`;
}

const inside = (body: string): Promise<Outcome> =>
  runInside({ network: network(), up, names: ['raw.test', 'l7.test'] }, python(body));

const statuses = (o: Outcome): Record<string, number[]> =>
  Object.fromEntries(o.results.map((r) => [r.label, r.responses.map((x) => x.status)]));

/** How the strictest of the usual servers would read a path: parameters dropped, slashes merged,
 * escapes decoded (twice), case folded. */
function serverReading(url: string): string {
  let p = url.split('?')[0] ?? '';
  for (let i = 0; i < 2; i++) {
    try {
      p = decodeURIComponent(p);
    } catch {
      // an invalid escape stays as it is
    }
  }
  const out: string[] = [];
  for (const raw of p.replace(/\\/g, '/').split('/')) {
    const seg = raw.split(';')[0] as string;
    if (seg === '' || seg === '.') continue;
    if (seg === '..') out.pop();
    else out.push(seg.toLowerCase());
  }
  return '/' + out.join('/');
}

describe('sniffing a raw tunnel', () => {
  it('a request line split over two writes is still HTTP: Host: evil.test is refused (403, host-mismatch)', async () => {
    const o = await inside(`
import time
s = tunnel('raw.test:${up.httpPort}', 'split')
if s:
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(b'GE')
    time.sleep(0.3)  # two writes, so the proxy's first read holds only "GE"
    converse(s, [${py('T /split HTTP/1.1\r\nHost: evil.test\r\nConnection: close\r\n\r\n')}], 'split')
s = tunnel('raw.test:${up.httpPort}', 'split ok')
if s:
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(b'G')
    time.sleep(0.3)
    converse(s, [${py(`ET /split-ok HTTP/1.1\r\nHost: raw.test:${up.httpPort}\r\nConnection: close\r\n\r\n`)}], 'split ok')
`);
    expect(statuses(o)).toEqual({ split: [403], 'split ok': [200] });
    expect(findings(o.audit)).toEqual(['host-mismatch']);
    expect(up.seen.some((s) => s.url === '/split')).toBe(false);
    expect(up.seen.some((s) => s.url === '/split-ok')).toBe(true);
  });

  it('a leading empty line and a long method are HTTP too: refused, never relayed', async () => {
    const o = await inside(`
s = tunnel('raw.test:${up.httpPort}', 'crlf')
if s:
    converse(s, [${py('\r\nGET /leading-crlf HTTP/1.1\r\nHost: evil.test\r\nConnection: close\r\n\r\n')}], 'crlf')
s = tunnel('raw.test:${up.httpPort}', 'long method')
if s:
    converse(s, [${py(`${'M'.repeat(40)} /long-method HTTP/1.1\r\nHost: evil.test\r\nConnection: close\r\n\r\n`)}], 'long method')
`);
    expect(statuses(o)).toEqual({ crlf: [400], 'long method': [403] });
    expect(refusals(o.audit, 4002).map(reasonOf)).toEqual([
      expect.stringMatching(/malformed/),
      expect.stringMatching(/Host header/),
    ]);
    expect(up.seen.some((s) => s.url === '/leading-crlf' || s.url === '/long-method')).toBe(false);
  });
});

describe('paths a server reads as /admin', () => {
  const forms: [string, string, RegExp][] = [
    ['/public/..;/admin/x', 'dot-dot-semicolon', /denied by "deny GET \/admin\/\*\*"/],
    ['/public/..;jsessionid=1/admin/x', 'dot-dot with parameter', /denied by/],
    ['/admin;x=1/y', 'segment parameter', /denied by/],
    ['//admin/x', 'repeated slash', /denied by/],
    ['/ADMIN/x', 'upper case', /denied by/],
    ['/Admin/x', 'mixed case', /denied by/],
    ['/%61dmin/x', 'escaped letter', /denied by/],
    ['/admin%3Bx/y', 'encoded semicolon', /encoded semicolon/],
    ['/%2561dmin/x', 'double encoding', /double-encoded/],
    ['/public/%C0%AE%C0%AE/admin/x', 'overlong UTF-8 dots', /not UTF-8/],
  ];

  it('every spelling is refused (403, audited) and the upstream sees none of them; /public and /administrator pass', async () => {
    const get = (path: string, label: string): string =>
      `exchange([${py(`GET http://l7.test:${up.httpPort}${path} HTTP/1.1\r\nHost: l7.test:${up.httpPort}\r\nConnection: close\r\n\r\n`)}], ${py(label)})`;
    const o = await inside(
      [
        ...forms.map(([path, label]) => get(path, label)),
        get('/public/x', 'baseline'),
        get('/administrator', 'prefix only'),
      ].join('\n'),
    );
    const expected = Object.fromEntries([
      ...forms.map(([, label]) => [label, [403]]),
      ['baseline', [200]],
      ['prefix only', [200]],
    ]);
    expect(statuses(o)).toEqual(expected);
    const reasons = refusals(o.audit, 4002).map(reasonOf);
    expect(reasons).toHaveLength(forms.length);
    forms.forEach(([, label, reason], i) => expect(reasons[i], label).toMatch(reason));
    const admin = up.seen.filter((s) => /^\/admin(\/|$)/.test(serverReading(s.url)));
    expect(admin.map((s) => s.url)).toEqual([]);
    expect(up.seen.some((s) => s.url === '/public/x')).toBe(true);
  });
});
