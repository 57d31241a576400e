/** The pure part of proposals: redaction of samples, the narrowest glob, the dedup key, risk notes. */
import { describe, expect, it } from 'vitest';
import { compilePolicy, parsePolicy } from '../../src/policy/index.js';
import {
  allowedBy,
  globFor,
  proposalKey,
  redactPath,
  riskNotes,
  smallestRule,
} from '../../src/gateway/proposals/proposal-rules.js';

function gen(network: string) {
  const r = parsePolicy(`version: 1\nnetwork_policies:\n${network}`, 'p.yaml');
  if (!r.ok) throw new Error(r.diagnostics[0]!.message);
  return compilePolicy(r.policy);
}

describe('proposal rules', () => {
  it('redacts secret-looking path segments and never keeps a query', () => {
    expect(redactPath('/v1/items?token=abc')).toBe('/v1/items');
    expect(redactPath('/bot123456:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/sendMessage')).toBe(
      '/{redacted}/sendMessage',
    );
    expect(redactPath('/keys/ghp_abcdefghij0123456789')).toBe('/keys/{redacted}');
    expect(redactPath('/a/carapace:cred:OPENAI_KEY')).toBe('/a/{redacted}');
    expect(redactPath('/h/0123456789abcdef0123456789abcdef')).toBe('/h/{redacted}');
    expect(redactPath('/repos/octocat/hello-world/issues')).toBe('/repos/octocat/hello-world/issues');
  });

  it('makes the narrowest glob the samples allow', () => {
    expect(globFor(['/v1/items/1'])).toBe('/v1/items/1');
    expect(globFor(['/v1/items/1', '/v1/items/2'])).toBe('/v1/items/*');
    expect(globFor(['/v1/items/1', '/v1/items/2/x'])).toBe('/v1/items/**');
    expect(globFor(['/a', '/b/c'])).toBe('/**');
    expect(globFor(['/k/{redacted}'])).toBe('/k/*');
  });

  it('keys requests by method and first path segment, connections by host, port and binary', () => {
    const base = { host: 'API.x.com', port: 443, binary: '/usr/bin/curl', ancestors: [] };
    expect(proposalKey({ ...base, level: 'connect' })).toBe('api.x.com|443|/usr/bin/curl');
    expect(proposalKey({ ...base, level: 'request', method: 'get', path: '/v1/a/b' })).toBe(
      'api.x.com|443|/usr/bin/curl|GET|/v1/**',
    );
  });

  it('proposes an allow rule on the inspected endpoint, with risk notes for what it widens', () => {
    const g = gen(`  api:
    name: api
    endpoints:
      - { host: "*.x.com", port: 443, protocol: rest, credentials: [TOKEN], rules: [ { allow: { method: GET, path: "/ok/**" } } ] }
`);
    const f = {
      level: 'request' as const,
      host: 'api.x.com',
      port: 443,
      binary: '/usr/bin/curl',
      ancestors: [],
      method: 'POST',
      path: '/v1/send',
    };
    expect(allowedBy(g, f)).toBe(false);
    const rule = smallestRule(g, f, ['/v1/send'], new Set(['api']));
    expect(rule).toMatchObject({
      kind: 'request',
      host: '*.x.com',
      method: 'POST',
      path: '/v1/send',
      policyKey: 'api',
    });
    const notes = riskNotes(rule, f);
    expect(notes).toHaveLength(3);
    expect(notes[0]).toMatch(/^wildcard host/);
    expect(notes[1]).toMatch(/^write method POST/);
    expect(notes[2]).toMatch(/^credential TOKEN/);
  });

  it('proposes a new entry for a host the policy does not know, limited to the binary; private targets are noted', () => {
    const g = gen(`  other:
    name: other
    endpoints: [ { host: a.com, port: 443 } ]
`);
    const f = {
      level: 'connect' as const,
      host: '10.1.2.3',
      port: 8080,
      binary: '/usr/bin/python3',
      ancestors: [],
    };
    const rule = smallestRule(g, f, [], new Set(['allow_10_1_2_3_8080_python3']));
    expect(rule).toMatchObject({
      kind: 'endpoint',
      binaries: ['/usr/bin/python3'],
      policyKey: 'allow_10_1_2_3_8080_python3_2',
    });
    expect(riskNotes(rule, f)).toEqual(['private, loopback or link-local target (10.1.2.3)']);
    const safe = smallestRule(g, { ...f, host: 'b.com', port: 443 }, [], new Set());
    expect(riskNotes(safe, { host: 'b.com', ip: '93.184.216.34' })).toEqual([]);
    expect(riskNotes(safe, { host: 'b.com', ip: '169.254.169.254' })[0]).toMatch(
      /link-local target \(b\.com → 169\.254\.169\.254\)/,
    );
  });

  it('judges an edited rule as written: binaries [] admits any program, and says so', () => {
    const g = gen(`  other:
    name: other
    endpoints: [ { host: a.com, port: 443 } ]
`);
    const f = { level: 'connect' as const, host: 'b.com', port: 443, binary: '/usr/bin/curl', ancestors: [] };
    const rule = smallestRule(g, f, [], new Set());
    expect(riskNotes(rule, f)).toEqual([]);
    // The operator empties the list in the editor: the same rule, for every program.
    expect(riskNotes({ ...rule, binaries: [] }, f)).toEqual([
      'binaries [] admits any program in the sandbox, not only /usr/bin/curl',
    ]);
    // A denial whose binary the proxy could not name proposes that already, and says why.
    const unknown = smallestRule(g, { ...f, binary: '' }, [], new Set());
    expect(unknown.binaries).toEqual([]);
    expect(riskNotes(unknown, { ...f, binary: '' })).toEqual([
      'no binary known: the new entry admits any program in the sandbox',
    ]);
  });

  it('keeps an extension method (WebDAV PROPFIND) as the rule: the proxy forwards any token method, and the rule allows exactly it', () => {
    const g = gen(`  dav:
    name: dav
    endpoints:
      - { host: dav.x.com, port: 443, protocol: rest, rules: [ { allow: { method: GET, path: "/**" } } ] }
`);
    const f = {
      level: 'request' as const,
      host: 'dav.x.com',
      port: 443,
      binary: '/usr/bin/rclone',
      ancestors: [],
      method: 'PROPFIND',
      path: '/files/a',
    };
    const rule = smallestRule(g, f, ['/files/a'], new Set(['dav']));
    expect(rule).toMatchObject({ kind: 'request', method: 'PROPFIND', path: '/files/a' });
    expect(riskNotes(rule, f)).toEqual(['write method PROPFIND: the agent may change or send data']);
    const approved = gen(`  dav:
    name: dav
    endpoints:
      - { host: dav.x.com, port: 443, protocol: rest, rules: [ { allow: { method: PROPFIND, path: "/files/**" } } ] }
`);
    expect(allowedBy(approved, f)).toBe(true);
    expect(allowedBy(approved, { ...f, method: 'DELETE' })).toBe(false);
  });
});
