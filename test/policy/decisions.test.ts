/** Table-driven decision tests: what a compiled policy allows and why. */
import { describe, expect, it } from 'vitest';
import { compilePolicy, type ConnectQuery, type RequestQuery } from '../../src/policy/index.js';
import { policyOf } from './helpers.js';

const POLICY = `
version: 1
network_policies:
  github:
    name: GitHub access
    endpoints:
      - { host: api.github.com, port: 443, protocol: rest, access: read-only }
      - { host: github.com, port: 443 }
    binaries:
      - { path: /usr/bin/git, descendants: true }
      - { path: /usr/bin/gh }
  cdn:
    endpoints:
      - { host: "*.example.com", port: 443 }
      - { host: "**.deep.example.org", ports: [80, 443] }
  python:
    endpoints:
      - { host: pypi.org, port: 443 }
    binaries:
      - { path: "/usr/bin/python3*" }
      - { path: "/sandbox/.uv/python/**/python3*" }
  telegram:
    endpoints:
      - host: api.telegram.org
        port: 443
        protocol: rest
        rules:
          - allow: { method: GET, path: "/bot*/**" }
          - allow: { method: POST, path: "/bot*/sendMessage" }
  search:
    endpoints:
      - host: api.search.com
        port: 443
        protocol: rest
        rules:
          - allow: { method: GET, path: /search, query: { q: "*", lang: { any: [en, de] } } }
          - allow: { method: GET, path: "/repos/*/issues" }
        deny_rules:
          - { method: GET, path: /search, query: { q: "secret*" } }
  rw:
    endpoints:
      - host: rw.com
        port: 443
        access: read-write
        deny_rules:
          - { method: POST, path: "/admin/**" }
  audit:
    endpoints:
      - { host: audit.com, port: 443, protocol: rest, enforcement: audit, access: read-only }
  both_a:
    endpoints:
      - { host: both.com, port: 443 }
  both_b:
    endpoints:
      - host: both.com
        port: 443
        access: full
        deny_rules:
          - { method: DELETE, path: "/**" }
  internal_db:
    endpoints:
      - { port: 5432, allowed_ips: [10.0.0.0/8] }
  ssdp:
    endpoints:
      - host: upnp.test
        port: 443
        protocol: rest
        rules:
          - allow: { method: M-SEARCH, path: "/**" }
          - allow: { method: notify, path: "/**" }
        deny_rules:
          - { method: NOTIFY, path: "/private/**" }
`;

const gen = compilePolicy(policyOf(POLICY));

type ConnectCase = [string, ConnectQuery, boolean, string | null, string?];

const connectCases: ConnectCase[] = [
  [
    'exact host, listed binary',
    { host: 'api.github.com', port: 443, binary: '/usr/bin/git' },
    true,
    'github',
  ],
  [
    'upper case and trailing dot',
    { host: 'API.GitHub.COM.', port: 443, binary: '/usr/bin/gh' },
    true,
    'github',
  ],
  [
    'binary not listed',
    { host: 'api.github.com', port: 443, binary: '/usr/bin/curl' },
    false,
    null,
    'only for other programs',
  ],
  ['unknown binary', { host: 'api.github.com', port: 443 }, false, null, 'unidentified program'],
  [
    'child of a listed binary with descendants: true (ancestor)',
    { host: 'github.com', port: 443, binary: '/usr/bin/ssh', ancestors: ['/usr/bin/git', '/bin/bash'] },
    true,
    'github',
  ],
  [
    'child of a listed binary without descendants: not admitted, and the reason says why',
    { host: 'github.com', port: 443, binary: '/usr/bin/ssh', ancestors: ['/bin/bash', '/usr/bin/gh'] },
    false,
    null,
    'it runs under "/usr/bin/gh", but the programs a binary starts count only with descendants: true',
  ],
  [
    'wrong port',
    { host: 'api.github.com', port: 80, binary: '/usr/bin/git' },
    false,
    null,
    'allowed on port 443',
  ],
  ['one-label wildcard: subdomain', { host: 'a.example.com', port: 443 }, true, 'cdn'],
  [
    'one-label wildcard: apex',
    { host: 'example.com', port: 443 },
    false,
    null,
    'no policy allows example.com:443',
  ],
  ['one-label wildcard: two labels deep', { host: 'a.b.example.com', port: 443 }, false, null],
  ['any-depth wildcard: one label', { host: 'x.deep.example.org', port: 80 }, true, 'cdn'],
  ['any-depth wildcard: three labels, port list', { host: 'a.b.c.deep.example.org', port: 443 }, true, 'cdn'],
  ['any-depth wildcard: apex', { host: 'deep.example.org', port: 443 }, false, null],
  ['any-depth wildcard: port not listed', { host: 'x.deep.example.org', port: 8080 }, false, null],
  ['suffix is not a label boundary', { host: 'evilexample.com', port: 443 }, false, null],
  [
    'binary glob /usr/bin/python3*',
    { host: 'pypi.org', port: 443, binary: '/usr/bin/python3.11' },
    true,
    'python',
  ],
  [
    'binary glob ** any depth',
    { host: 'pypi.org', port: 443, binary: '/sandbox/.uv/python/cpython-3.12/bin/python3.12' },
    true,
    'python',
  ],
  [
    'binary glob * stays in one segment',
    { host: 'pypi.org', port: 443, binary: '/usr/bin/python3/x' },
    false,
    null,
  ],
  ['binary glob no match', { host: 'pypi.org', port: 443, binary: '/usr/bin/python2' }, false, null],
  [
    'absent binaries admit any program',
    { host: 'api.telegram.org', port: 443, binary: '/usr/bin/anything' },
    true,
    'telegram',
  ],
  [
    'absent binaries admit an unidentified program',
    { host: 'api.telegram.org', port: 443 },
    true,
    'telegram',
  ],
  ['hostless allowed_ips endpoint', { host: 'db.internal', port: 5432 }, true, 'internal_db'],
  ['unknown host', { host: 'unknown.com', port: 443 }, false, null, 'no policy allows unknown.com:443'],
  ['several entries: the first key decides', { host: 'both.com', port: 443 }, true, 'both_a'],
];

describe('decideConnect', () => {
  for (const [name, q, allowed, policy, reason] of connectCases) {
    it(name, () => {
      const d = gen.decideConnect(q);
      expect(d.allowed, d.reason).toBe(allowed);
      expect(d.verdict).toBe(allowed ? 'allow' : 'deny');
      expect(d.policy).toBe(policy);
      if (reason !== undefined) expect(d.reason).toContain(reason);
    });
  }

  it('reports the display name, enforcement and what the proxy needs', () => {
    const d = gen.decideConnect({ host: 'api.github.com', port: 443, binary: '/usr/bin/git' });
    expect(d).toMatchObject({ name: 'GitHub access', enforcement: 'enforce', inspect: true });
    expect(d.endpoint).toMatchObject({
      protocol: 'rest',
      tls: 'auto',
      access: 'read-only',
      host: 'api.github.com',
    });
    expect(d.binary).toMatchObject({ pattern: '/usr/bin/git', viaAncestor: false });
    const l4 = gen.decideConnect({ host: 'github.com', port: 443, binary: '/usr/bin/git' });
    expect(l4.inspect).toBe(false);
    expect(l4.endpoint?.protocol).toBe('tcp');
  });

  it('reports the ancestor that admitted a child process', () => {
    const d = gen.decideConnect({
      host: 'github.com',
      port: 443,
      binary: '/usr/bin/ssh',
      ancestors: ['/usr/bin/git'],
    });
    expect(d.binary).toEqual({ pattern: '/usr/bin/git', path: '/usr/bin/git', viaAncestor: true });
  });

  it('merges what several admitting endpoints need', () => {
    const d = gen.decideConnect({ host: 'both.com', port: 443 });
    expect(d.endpoints.map((e) => e.policy)).toEqual(['both_a', 'both_b']);
    expect(d.inspect).toBe(true);
    const db = gen.decideConnect({ host: 'db.internal', port: 5432 });
    expect(db.allowedIps).toEqual(['10.0.0.0/8']);
  });
});

type RequestCase = [string, RequestQuery, boolean, string?];
const R = (host: string, method: string, path: string, extra: Partial<RequestQuery> = {}): RequestQuery => ({
  host,
  port: 443,
  method,
  path,
  ...extra,
});
const git = { binary: '/usr/bin/git' };

const requestCases: RequestCase[] = [
  ['read-only allows GET', R('api.github.com', 'GET', '/repos/a/b', git), true, 'access: read-only'],
  ['read-only allows HEAD', R('api.github.com', 'HEAD', '/repos/a/b', git), true],
  ['read-only allows OPTIONS', R('api.github.com', 'OPTIONS', '/', git), true],
  [
    'read-only refuses POST',
    R('api.github.com', 'POST', '/repos/a/b/issues', git),
    false,
    'matches no allow rule',
  ],
  ['method is case-insensitive', R('api.github.com', 'get', '/x', git), true],
  [
    'L4 endpoint passes every request',
    R('github.com', 'POST', '/a/b.git/git-upload-pack', git),
    true,
    'not inspected',
  ],
  [
    'binary still counts for requests',
    R('api.github.com', 'GET', '/x', { binary: '/usr/bin/curl' }),
    false,
    'only for other programs',
  ],
  [
    '/bot*/** allows a bot path',
    R('api.telegram.org', 'GET', '/bot123:abc/getUpdates'),
    true,
    'allow GET /bot*/**',
  ],
  ['/bot*/** allows deeper paths', R('api.telegram.org', 'GET', '/bot1/a/b/c'), true],
  ['/bot*/** does not allow other first segments', R('api.telegram.org', 'GET', '/notbot/getMe'), false],
  ['POST only to sendMessage', R('api.telegram.org', 'POST', '/bot1/sendMessage'), true],
  ['POST elsewhere refused', R('api.telegram.org', 'POST', '/bot1/deleteWebhook'), false],
  ['GET rule covers HEAD', R('api.telegram.org', 'HEAD', '/bot1/getMe'), true],
  [
    'query: all configured params match',
    R('api.search.com', 'GET', '/search', { query: 'q=hello&lang=en' }),
    true,
  ],
  ['query: any-of matcher', R('api.search.com', 'GET', '/search?q=hi&lang=de'), true],
  ['query: value outside any-of', R('api.search.com', 'GET', '/search', { query: 'q=hi&lang=fr' }), false],
  ['query: missing param', R('api.search.com', 'GET', '/search', { query: 'q=hi' }), false],
  [
    'query: every value must match',
    R('api.search.com', 'GET', '/search', { query: 'q=a&lang=en&lang=fr' }),
    false,
  ],
  [
    'query: record input',
    R('api.search.com', 'GET', '/search', { query: { q: 'x', lang: ['en', 'de'] } }),
    true,
  ],
  [
    'deny rule with query wins over allow',
    R('api.search.com', 'GET', '/search', { query: 'q=secret-plans&lang=en' }),
    false,
    'denied by "deny GET /search ?q"',
  ],
  ['* matches one segment', R('api.search.com', 'GET', '/repos/foo/issues'), true],
  ['* does not cross a segment', R('api.search.com', 'GET', '/repos/foo/bar/issues'), false],
  ['read-write allows POST', R('rw.com', 'POST', '/items'), true],
  ['read-write allows PATCH', R('rw.com', 'PATCH', '/items/1'), true],
  ['read-write refuses DELETE', R('rw.com', 'DELETE', '/items/1'), false],
  [
    'deny rule wins over the access preset',
    R('rw.com', 'POST', '/admin/users'),
    false,
    'deny POST /admin/**',
  ],
  [
    'deny of one entry wins over another entry that allows all',
    R('both.com', 'DELETE', '/x'),
    false,
    'policy "both_b"',
  ],
  ['the other entry still allows the rest', R('both.com', 'PUT', '/x'), true],
  ['dot segments are resolved before matching', R('api.telegram.org', 'GET', '/other/../bot1/getMe'), true],
  [
    'encoded dot segments are resolved too',
    R('api.telegram.org', 'POST', '/bot1/x/%2e%2e/sendMessage'),
    true,
  ],
  [
    '.. above the root is refused',
    R('api.telegram.org', 'GET', '/bot1/%2e%2e/%2e%2e/etc'),
    false,
    'cannot be read unambiguously',
  ],
  [
    'a bad escape is refused',
    R('api.telegram.org', 'GET', '/bot1/%zz'),
    false,
    'cannot be read unambiguously',
  ],
  ['unknown host', R('nope.com', 'GET', '/'), false, 'no policy allows nope.com:443'],
  // Any RFC 9110 token is a method; rules and requests compare case-insensitively.
  ['a token method with a hyphen', R('upnp.test', 'M-SEARCH', '/'), true, 'allow M-SEARCH /**'],
  ['a token method in another case', R('upnp.test', 'm-search', '/'), true, 'allow M-SEARCH /**'],
  ['a rule method written in lower case', R('upnp.test', 'NOTIFY', '/events'), true, 'allow NOTIFY /**'],
  ['a deny rule for a token method', R('upnp.test', 'notify', '/private/x'), false, 'deny NOTIFY'],
  ['a token method no rule names', R('upnp.test', 'SUBSCRIBE', '/events'), false, 'matches no allow rule'],
];

describe('decideRequest', () => {
  for (const [name, q, allowed, reason] of requestCases) {
    it(name, () => {
      const d = gen.decideRequest(q);
      expect(d.allowed, d.reason).toBe(allowed);
      if (reason !== undefined) expect(d.reason).toContain(reason);
    });
  }

  it('reports the matched rule', () => {
    const d = gen.decideRequest(R('api.telegram.org', 'POST', '/bot9/sendMessage'));
    expect(d.rule).toEqual({ kind: 'allow', index: 1, text: 'allow POST /bot*/sendMessage' });
    const denied = gen.decideRequest(R('rw.com', 'POST', '/admin/x'));
    expect(denied.rule).toMatchObject({ kind: 'deny', index: 0 });
    expect(denied.verdict).toBe('deny');
  });

  it('audit lets a violation through but says so', () => {
    const d = gen.decideRequest(R('audit.com', 'DELETE', '/x'));
    expect(d).toMatchObject({ allowed: true, verdict: 'deny', enforcement: 'audit' });
    expect(d.reason).toContain('audit');
    const ok = gen.decideRequest(R('audit.com', 'GET', '/x'));
    expect(ok).toMatchObject({ allowed: true, verdict: 'allow', enforcement: 'audit' });
  });

  it('enforce (the default) refuses the same violation', () => {
    const d = gen.decideRequest(R('api.github.com', 'DELETE', '/x', git));
    expect(d).toMatchObject({ allowed: false, verdict: 'deny', enforcement: 'enforce' });
  });

  it('connection decisions are enforced even on audit endpoints', () => {
    const d = gen.decideConnect({ host: 'audit.com', port: 80 });
    expect(d.allowed).toBe(false);
  });
});

describe('generations', () => {
  it('are immutable', () => {
    const d = gen.decideConnect({ host: 'api.github.com', port: 443, binary: '/usr/bin/git' });
    expect(Object.isFrozen(gen)).toBe(true);
    expect(Object.isFrozen(d.endpoint)).toBe(true);
    expect(Object.isFrozen(gen.endpoints())).toBe(true);
  });

  it('do not change when the source policy object is mutated afterwards', () => {
    const policy = policyOf(
      'version: 1\nnetwork_policies:\n  a:\n    endpoints: [{ host: a.com, port: 443 }]\n',
    );
    const g = compilePolicy(policy);
    const np = policy.network_policies?.a;
    if (np?.endpoints[0] !== undefined) np.endpoints[0].host = 'b.com';
    expect(g.decideConnect({ host: 'a.com', port: 443 }).allowed).toBe(true);
    expect(g.decideConnect({ host: 'b.com', port: 443 }).allowed).toBe(false);
  });

  it('refuse to compile an invalid policy', () => {
    expect(() =>
      compilePolicy({ version: 1, network_policies: { a: { endpoints: [{ host: '*', port: 443 }] } } }),
    ).toThrow(/network_policies\.a\.endpoints\[0\]\.host: host "\*" would allow every host/);
  });

  it('deny everything when there are no network policies', () => {
    const g = compilePolicy(policyOf('version: 1\n'));
    expect(g.decideConnect({ host: 'a.com', port: 443 }).allowed).toBe(false);
    expect(g.endpointCount).toBe(0);
  });
});
