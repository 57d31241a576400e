/** The building blocks: globs, host patterns, IP ranges, limits, request paths. */
import { describe, expect, it } from 'vitest';
import { compilePathGlob, compileValueGlob } from '../../src/policy/patterns/glob.js';
import {
  hostMatches,
  normalizeHost,
  parseHostPattern,
  type HostPattern,
} from '../../src/policy/patterns/host-pattern.js';
import { allowedIpProblem, parseIpRange } from '../../src/policy/patterns/ip-ranges.js';
import {
  canonicalRequestPath,
  parseCpuMillis,
  parseMemoryBytes,
  resolveLimits,
} from '../../src/policy/index.js';
import { policyOf } from './helpers.js';

describe('path globs', () => {
  it.each([
    ['/**', '/', true],
    ['/**', '/a/b/c', true],
    ['**', '/anything/at/all', true],
    ['/bot*/**', '/bot123/sendMessage', true],
    ['/bot*/**', '/bot123', true],
    ['/bot*/**', '/bot/x', true],
    ['/bot*/**', '/robot1/x', false],
    ['/repos/*/issues', '/repos/a/issues', true],
    ['/repos/*/issues', '/repos/a/b/issues', false],
    ['/repos/*/issues', '/repos//issues', true],
    ['/**/info/refs*', '/org/repo.git/info/refs', true],
    ['/**/info/refs*', '/info/refs', true],
    ['/a/**/b', '/a/b', true],
    ['/a/**/b', '/a/x/y/b', true],
    ['/a/**/b', '/a/x/y/c', false],
    ['/v1.0/*', '/v1x0/a', false],
    ['/a?b', '/a?b', true],
    ['/a?b', '/axb', false],
    ['/usr/bin/python3*', '/usr/bin/python3.11', true],
    ['/usr/bin/python3*', '/usr/bin/python3/x', false],
    ['/home/*/.local/bin/copilot', '/home/u/.local/bin/copilot', true],
    ['/sandbox/.uv/python/**/python3*', '/sandbox/.uv/python/cpython-3.12/bin/python3.12', true],
  ])('%s vs %s → %s', (pattern, path, expected) => {
    expect(compilePathGlob(pattern).test(path)).toBe(expected);
  });

  it('value globs have no separator', () => {
    expect(compileValueGlob('NVIDIA/*').test('NVIDIA/a/b')).toBe(true);
    expect(compileValueGlob('v1.*').test('v1x2')).toBe(false);
  });
});

describe('host patterns', () => {
  const p = (h: string): HostPattern => {
    const r = parseHostPattern(h);
    if ('error' in r) throw new Error(r.error);
    return r;
  };

  it('normalizes case, trailing dot and IPv6 brackets', () => {
    expect(normalizeHost('API.Example.COM.')).toBe('api.example.com');
    expect(normalizeHost('[::1]')).toBe('::1');
  });

  it.each([
    ['*.x.com', 'a.x.com', true],
    ['*.x.com', 'x.com', false],
    ['*.x.com', 'a.b.x.com', false],
    ['**.x.com', 'a.b.x.com', true],
    ['**.x.com', 'x.com', false],
    ['**.x.com', 'ax.com', false],
    ['api.x.com', 'api.x.com', true],
  ])('%s matches %s: %s', (pattern, host, expected) => {
    expect(hostMatches(p(pattern), host)).toBe(expected);
  });

  it.each([
    '*',
    '**',
    '*.com',
    '**.io',
    'a*b.x.com',
    '*x.com',
    'api.*.x.com',
    'x.*',
    'a..b',
    '-a.com',
    'a b.com',
    '*.0.0.1',
    '**.168.1.1',
  ])('rejects %s', (host) => {
    expect('error' in parseHostPattern(host)).toBe(true);
  });

  it('accepts IP addresses and underscores', () => {
    expect(p('10.0.0.1')).toEqual({ kind: 'exact', host: '10.0.0.1' });
    expect(p('::1')).toEqual({ kind: 'exact', host: '::1' });
    expect(p('_dmarc.example.com')).toEqual({ kind: 'exact', host: '_dmarc.example.com' });
  });
});

describe('IP ranges', () => {
  it.each([
    '10.0.0.0/8',
    '172.16.0.0/12',
    '192.168.1.10',
    'fd00::/8',
    '2001:db8::/32',
    '::ffff:10.0.0.0/104',
  ])('accepts %s', (r) => {
    expect(allowedIpProblem(r)).toBeNull();
  });

  it.each([
    ['10.0.0.0/33', 'invalid prefix'],
    ['256.0.0.1', 'not an IP address'],
    ['10.1.0.0/8', 'did you mean 10.0.0.0/8?'],
    ['fd00::1/8', 'did you mean fd00::/8?'],
    ['127.0.0.1', 'loopback'],
    ['169.254.169.254', 'link-local'],
    ['0.0.0.0/0', 'loopback'],
    ['::/0', 'loopback'],
    ['::1', 'loopback'],
    ['fe80::1', 'link-local'],
  ])('rejects %s', (r, why) => {
    expect(allowedIpProblem(r)).toContain(why);
  });

  it('parses to network and prefix', () => {
    expect(parseIpRange('10.0.0.0/8')).toEqual({ family: 4, network: 10n << 24n, prefix: 8 });
  });
});

describe('limits', () => {
  it.each([
    [1048576 * 8, 8 * 2 ** 20],
    ['512Mi', 512 * 2 ** 20],
    ['2G', 2e9],
    ['1.5Gi', 1.5 * 2 ** 30],
    ['64M', 64e6],
  ])('memory %s → %s bytes', (input, bytes) => {
    expect(parseMemoryBytes(input)).toBe(bytes);
  });

  it.each(['2GB', '-1', '1k', 'lots', 100])('rejects memory %s', (input) => {
    expect(typeof parseMemoryBytes(input)).toBe('object');
  });

  it.each([
    [0.5, 500],
    [2, 2000],
    ['500m', 500],
    ['1.5', 1500],
  ])('cpu %s → %s millicores', (input, millis) => {
    expect(parseCpuMillis(input)).toBe(millis);
  });

  it('resolves the limits section', () => {
    expect(
      resolveLimits(
        policyOf('version: 1\nlimits: { memory: 1Gi, pids: 100, cpu: "250m", open_files: 64 }\n'),
      ),
    ).toEqual({
      memoryBytes: 2 ** 30,
      pids: 100,
      cpuMillis: 250,
      openFiles: 64,
    });
    expect(resolveLimits(policyOf('version: 1\n'))).toEqual({});
  });
});

describe('request paths', () => {
  it.each([
    ['/a/b', '/a/b'],
    ['/a//b/', '/a/b/'],
    ['/a/./b/../c', '/a/c'],
    ['/%61%62c', '/abc'],
    ['/@scope%2fname', '/@scope%2Fname'],
    ['/', '/'],
    ['/.well-known/x', '/.well-known/x'],
    ['/a/b/', '/a/b/'],
  ])('%s → %s', (raw, canonical) => {
    expect(canonicalRequestPath(raw)).toBe(canonical);
  });

  it.each(['a/b', '/../x', '/a/%2e%2e/%2e%2e', '/%zz', '/a%00b'])('refuses %s', (raw) => {
    expect(canonicalRequestPath(raw)).toBeNull();
  });
});
