/**
 * The endpoint index (src/policy/compile/endpoint-index.ts) finds every endpoint that admits a
 * connection: checked against a scan of every endpoint, and the decisions that depend on seeing
 * all of them (the first key decides, a later entry's deny rule still refuses, reasons name every
 * entry) pinned one by one.
 */
import { describe, expect, it } from 'vitest';
import { isIP } from 'node:net';
import {
  compilePolicy,
  type ConnectQuery,
  type Policy,
  type PolicyGeneration,
} from '../../src/policy/index.js';
import { compilePathGlob, isGlob } from '../../src/policy/patterns/glob.js';
import { hostMatches, normalizeHost, parseHostPattern } from '../../src/policy/patterns/host-pattern.js';
import { policyOf } from './helpers.js';

// Declared out of key order on purpose: the decision order is the keys' order, not the file's.
const OVERLAP = `
version: 1
network_policies:
  b_second:
    endpoints:
      - host: "*.shared.com"
        port: 443
        protocol: rest
        rules: [ { allow: { method: GET, path: "/**" } } ]
        deny_rules: [ { method: GET, path: "/secret/**" } ]
      - { host: api.shared.com, ports: [443, 8443], allowed_ips: [10.1.0.0/16] }
    binaries: [ { path: /usr/bin/curl }, { path: "/usr/bin/python3*", descendants: true } ]
  a_first:
    endpoints:
      - { host: "**.shared.com", port: 443, access: full, protocol: rest }
      - { host: API.SHARED.COM, port: 443 }
      - { port: 8443, allowed_ips: [10.0.0.0/8] }
    binaries: [ { path: /usr/bin/git, descendants: true }, { path: /usr/bin/curl } ]
  c_third:
    endpoints:
      - { host: "*.a.shared.com", port: 443, protocol: rest, access: read-only, enforcement: audit }
      - { host: 10.0.0.1, port: 443 }
      - { host: api.shared.com, port: 80 }
    binaries: [ { path: /usr/bin/git, descendants: true }, { path: /usr/bin/curl } ]
  d_any:
    endpoints:
      - { host: "**.a.shared.com", port: 443 }
      - { host: "*.other.org", ports: [80, 443] }
`;

/**
 * The reference: every endpoint, in decision order, whose host, port and binaries admit the
 * query — found by scanning them all with the pattern functions, not through the index.
 */
function reference(policy: Policy, gen: PolicyGeneration): (q: ConnectQuery) => string[] {
  const patterns = gen.endpoints().map((v) => {
    if (v.host === null) return null;
    const pattern = parseHostPattern(v.host);
    if ('error' in pattern) throw new Error(pattern.error);
    return pattern;
  });
  const globs = new Map<string, RegExp>();
  const is = (pattern: string, path: string): boolean => {
    if (!isGlob(pattern)) return pattern === path;
    let re = globs.get(pattern);
    if (re === undefined) globs.set(pattern, (re = compilePathGlob(pattern)));
    return re.test(path);
  };
  return (q) => {
    const host = normalizeHost(q.host);
    const admits = (key: string): boolean => {
      const binaries = policy.network_policies?.[key]?.binaries;
      if (binaries === undefined) return true;
      const binary = q.binary ?? '';
      if (binary !== '' && binaries.some((b) => is(b.path, binary))) return true;
      return (q.ancestors ?? []).some((a) => binaries.some((b) => b.descendants === true && is(b.path, a)));
    };
    const out: string[] = [];
    gen.endpoints().forEach((v, i) => {
      const pattern = patterns[i] ?? null;
      const hostOk =
        pattern === null || ((pattern.kind === 'exact' || isIP(host) === 0) && hostMatches(pattern, host));
      if (hostOk && v.ports.includes(q.port) && admits(v.policy)) out.push(`${v.policy}#${v.index}`);
    });
    return out;
  };
}

const HOSTS = [
  'api.shared.com',
  'API.Shared.COM.',
  'x.shared.com',
  'x.a.shared.com',
  'y.x.a.shared.com',
  'a.shared.com',
  'shared.com',
  'a..shared.com',
  'x.a.shared.com.evil.org',
  'evilshared.com',
  '10.0.0.1',
  'fe80::1%eth0.shared.com',
  'www.other.org',
  'a.www.other.org',
  'other.org',
  'unknown.example',
];
const CALLERS: Pick<ConnectQuery, 'binary' | 'ancestors'>[] = [
  {},
  { binary: '/usr/bin/git' },
  { binary: '/usr/bin/curl' },
  { binary: '/usr/bin/python3.12' },
  { binary: '/usr/bin/ssh', ancestors: ['/usr/bin/git', '/bin/bash'] },
  { binary: '/usr/bin/ssh', ancestors: ['/bin/bash', '/usr/bin/python3.11'] },
  { binary: '/usr/bin/wget', ancestors: ['/usr/bin/curl'] },
];

describe('the endpoint index finds every candidate', () => {
  const policy = policyOf(OVERLAP);
  const gen = compilePolicy(policy);
  const scan = reference(policy, gen);

  it('the same endpoints as a scan of all of them, for every host, port and caller', () => {
    let allowed = 0;
    let several = 0;
    for (const host of HOSTS) {
      for (const port of [80, 443, 8443]) {
        for (const caller of CALLERS) {
          const q = { host, port, ...caller };
          const d = gen.decideConnect(q);
          const expected = scan(q);
          const label = JSON.stringify(q);
          expect(
            d.endpoints.map((v) => `${v.policy}#${v.index}`),
            label,
          ).toEqual(expected);
          expect(d.allowed, label).toBe(expected.length > 0);
          expect(d.policy, label).toBe(expected.length > 0 ? expected[0]?.split('#')[0] : null);
          if (d.allowed) allowed++;
          if (d.endpoints.length > 1) several++;
        }
      }
    }
    // The table must exercise both cases, or the comparison says little.
    expect(allowed).toBeGreaterThan(50);
    expect(several).toBeGreaterThan(15);
  });

  it('the same at scale: 5,000 endpoints with wildcards over one another', () => {
    const network_policies: NonNullable<Policy['network_policies']> = {};
    for (let i = 0; i < 500; i++) {
      const d = `d${i % 50}.example.com`;
      network_policies[`p${String(i).padStart(3, '0')}`] = {
        endpoints: Array.from({ length: 10 }, (_, j) => {
          const k = (i * 10 + j) % 7;
          if (k === 0) return { host: `*.${d}`, port: 443 };
          if (k === 1) return { host: `**.${d}`, ports: [80, 443] };
          if (k === 2) return { host: `*.s${j}.${d}`, port: 443 };
          return { host: `h${j}.${d}`, port: k === 3 ? 80 : 443 };
        }),
        ...(i % 3 === 0 ? { binaries: [{ path: '/usr/bin/git' }, { path: '/usr/bin/python3*' }] } : {}),
      };
    }
    const big: Policy = { version: 1, network_policies };
    const g = compilePolicy(big);
    const scanBig = reference(big, g);
    expect(g.endpointCount).toBe(5000);
    for (let i = 0; i < 400; i++) {
      const d = `d${i % 50}.example.com`;
      const host = [`h${i % 10}.${d}`, `x.s${i % 10}.${d}`, `a.b.${d}`, `h${i % 10}.x.${d}`, d][
        i % 5
      ] as string;
      const q = { host, port: i % 2 === 0 ? 443 : 80, ...(CALLERS[i % CALLERS.length] ?? {}) };
      const expected = scanBig(q);
      expect(
        g.decideConnect(q).endpoints.map((v) => `${v.policy}#${v.index}`),
        JSON.stringify(q),
      ).toEqual(expected);
    }
  });
});

describe('decisions that need every candidate', () => {
  const gen = compilePolicy(policyOf(OVERLAP));

  it('an exact host and wildcards from several entries: all admit, the first key decides', () => {
    const d = gen.decideConnect({ host: 'api.shared.com', port: 443, binary: '/usr/bin/curl' });
    expect(d.endpoints.map((v) => `${v.policy}#${v.index}`)).toEqual([
      'a_first#0',
      'a_first#1',
      'b_second#0',
      'b_second#1',
    ]);
    expect(d.policy).toBe('a_first');
    expect(d.reason).toBe(
      'api.shared.com:443 allowed by **.shared.com:443 in policy "a_first" for "/usr/bin/curl"',
    );
    expect(d.inspect).toBe(true);
  });

  it('a one-label and an any-depth wildcard at different levels of one host both admit', () => {
    const d = gen.decideConnect({ host: 'x.a.shared.com', port: 443, binary: '/usr/bin/curl' });
    expect(d.endpoints.map((v) => `${v.policy}#${v.index}`)).toEqual(['a_first#0', 'c_third#0', 'd_any#0']);
  });

  it("a later entry's deny rule refuses a request the first entry allows", () => {
    // a_first (access: full) allows everything on **.shared.com; b_second denies /secret/** on
    // *.shared.com. An index that kept only the first candidate would let this through.
    const q = { host: 'x.shared.com', port: 443, binary: '/usr/bin/curl', method: 'GET' };
    const secret = gen.decideRequest({ ...q, path: '/secret/keys' });
    expect(secret.allowed).toBe(false);
    expect(secret.policy).toBe('b_second');
    expect(secret.reason).toBe(
      'GET /secret/keys denied by "deny GET /secret/**" on *.shared.com:443 in policy "b_second"',
    );
    expect(gen.decideRequest({ ...q, path: '/public' }).allowed).toBe(true);
    // git is admitted by a_first only: b_second's deny rule does not apply to it.
    expect(gen.decideRequest({ ...q, binary: '/usr/bin/git', path: '/secret/keys' }).allowed).toBe(true);
  });

  it('an audit entry among enforced ones: its rules are judged in key order', () => {
    const q = { host: 'x.a.shared.com', port: 443, binary: '/usr/bin/git', method: 'DELETE', path: '/x' };
    const d = gen.decideRequest(q);
    expect(d).toMatchObject({ allowed: true, verdict: 'allow', policy: 'a_first' });
  });

  it('a wildcard never matches an IP literal, even one whose zone ends like a domain', () => {
    const d = gen.decideConnect({ host: 'fe80::1%eth0.shared.com', port: 443, binary: '/usr/bin/curl' });
    expect(d.allowed).toBe(false);
    // Only the hostless entry (port 8443) was a candidate: *.shared.com would have admitted curl.
    expect(d.reason).toBe(
      'no policy allows fe80::1%eth0.shared.com:443; fe80::1%eth0.shared.com is allowed on port 8443',
    );
    expect(gen.decideConnect({ host: '10.0.0.1', port: 443, binary: '/usr/bin/git' }).policy).toBe('c_third');
  });

  it('a denial by binary names every entry that lists other programs, once each', () => {
    const d = gen.decideConnect({ host: 'api.shared.com', port: 443, binary: '/usr/bin/wget' });
    expect(d.reason).toBe(
      'api.shared.com:443 is allowed only for other programs, not "/usr/bin/wget": ' +
        '"a_first" allows /usr/bin/git, /usr/bin/curl; "b_second" allows /usr/bin/curl, /usr/bin/python3*',
    );
    const held = gen.decideConnect({
      host: 'x.a.shared.com',
      port: 443,
      binary: '/usr/bin/wget',
      ancestors: ['/usr/bin/curl'],
    });
    // d_any admits any program: the one-label entries are not the only candidates.
    expect(held.allowed).toBe(true);
    expect(held.policy).toBe('d_any');
  });

  it('a denial by port lists the ports of every entry for the host, sorted, once each', () => {
    const d = gen.decideConnect({ host: 'api.shared.com', port: 22, binary: '/usr/bin/curl' });
    expect(d.reason).toBe(
      'no policy allows api.shared.com:22; api.shared.com is allowed on port 80, 443, 8443',
    );
  });

  it('a binary glob reports the caller it matched; an exact match is shared and frozen', () => {
    const glob = gen.decideConnect({ host: 'www.shared.com', port: 443, binary: '/usr/bin/python3.12' });
    expect(glob.policy).toBe('b_second');
    expect(glob.binary).toEqual({
      pattern: '/usr/bin/python3*',
      path: '/usr/bin/python3.12',
      viaAncestor: false,
    });
    expect(glob.reason).toContain('for "/usr/bin/python3.12" (matches "/usr/bin/python3*")');
    const child = gen.decideConnect({
      host: 'www.shared.com',
      port: 443,
      binary: '/usr/bin/ssh',
      ancestors: ['/usr/bin/git'],
    });
    expect(child.binary).toEqual({ pattern: '/usr/bin/git', path: '/usr/bin/git', viaAncestor: true });
    expect(child.reason).toContain('for a child of "/usr/bin/git"');
    const a = gen.decideConnect({ host: 'api.shared.com', port: 443, binary: '/usr/bin/git' });
    const b = gen.decideConnect({ host: 'x.shared.com', port: 443, binary: '/usr/bin/git' });
    expect(a.binary).toEqual({ pattern: '/usr/bin/git', path: '/usr/bin/git', viaAncestor: false });
    expect(Object.isFrozen(a.binary)).toBe(true);
    expect(Object.isFrozen(b.binary)).toBe(true);
  });

  it("a decision's endpoints and unions stay as they were after later decisions", () => {
    const several = gen.decideConnect({ host: 'api.shared.com', port: 8443, binary: '/usr/bin/curl' });
    const before = JSON.stringify(several);
    expect(several.endpoints.map((v) => `${v.policy}#${v.index}`)).toEqual(['a_first#2', 'b_second#1']);
    expect(several.allowedIps).toEqual(['10.0.0.0/8', '10.1.0.0/16']);
    for (const host of HOSTS) gen.decideConnect({ host, port: 8443, binary: '/usr/bin/curl' });
    expect(
      gen.decideConnect({ host: 'x.a.shared.com', port: 443, binary: '/usr/bin/curl' }).endpoints,
    ).toHaveLength(3);
    gen.decideRequest({ host: 'x.shared.com', port: 443, method: 'GET', path: '/', binary: '/usr/bin/git' });
    expect(JSON.stringify(several)).toBe(before);
  });
});
