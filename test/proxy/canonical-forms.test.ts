/** Host names, IP literals, request paths and the relay header in their canonical forms. */
import { describe, expect, it } from 'vitest';
import { HostNameError, canonicalHost, parseAuthority } from '../../src/proxy/net/host-name.js';
import { canonicalTarget } from '../../src/proxy/http/path-canon.js';
import {
  ProxyHeaderError,
  findProxyHeaderEnd,
  parseProxyHeader,
} from '../../src/proxy/identity/proxy-protocol.js';

describe('canonicalHost', () => {
  it('lower-cases names and drops one trailing dot', () => {
    expect(canonicalHost('API.GitHub.com.')).toEqual({ host: 'api.github.com', kind: 'dns' });
    expect(canonicalHost('xn--nxasmq6b.example')).toEqual({ host: 'xn--nxasmq6b.example', kind: 'dns' });
  });
  it('accepts only the dotted-quad IPv4 form', () => {
    expect(canonicalHost('10.1.2.3')).toEqual({ host: '10.1.2.3', kind: 'ipv4' });
    for (const h of [
      '2130706433',
      '0177.0.0.1',
      '0x7f.0.0.1',
      '0x7f000001',
      '127.1',
      '127.0.1',
      '1.2.3.04',
      '256.0.0.1',
      '1.2.3.4.',
      'a.0x10',
    ]) {
      expect(() => canonicalHost(h), h).toThrow(/non-canonical IPv4|invalid/);
    }
  });
  it('reduces bracketed IPv6 to RFC 5952 form and refuses zones', () => {
    expect(canonicalHost('[0:0:0:0:0:0:0:1]')).toEqual({ host: '::1', kind: 'ipv6' });
    expect(canonicalHost('[::FFFF:127.0.0.1]')).toEqual({ host: '::ffff:7f00:1', kind: 'ipv6' });
    expect(() => canonicalHost('[fe80::1%25eth0]')).toThrow(/zone/);
    expect(() => canonicalHost('[::1')).toThrow(HostNameError);
  });
  it('refuses non-ASCII, percent signs, empty and over-long labels', () => {
    for (const h of ['exämple.com', 'a%2eb.com', 'a..b', '-a.com', `${'a'.repeat(64)}.com`, '', 'a b']) {
      expect(() => canonicalHost(h), h).toThrow(HostNameError);
    }
  });
});

describe('parseAuthority', () => {
  it('parses host:port and [v6]:port, with an optional default port', () => {
    expect(parseAuthority('Example.COM:443')).toEqual({ host: 'example.com', kind: 'dns', port: 443 });
    expect(parseAuthority('[::1]:8443')).toEqual({ host: '::1', kind: 'ipv6', port: 8443 });
    expect(parseAuthority('a.test', 80).port).toBe(80);
  });
  it('refuses a missing or bad port, userinfo and unbracketed IPv6', () => {
    for (const a of [
      'a.test',
      'a.test:0',
      'a.test:65536',
      'a.test:+1',
      'user@a.test:443',
      '::1:443',
      'a.test:',
    ]) {
      expect(() => parseAuthority(a), a).toThrow(HostNameError);
    }
  });
});

describe('canonicalTarget', () => {
  const ok = (t: string) => {
    const r = canonicalTarget(t);
    if (!r.ok) throw new Error(r.reason);
    return r;
  };
  const no = (t: string) => {
    const r = canonicalTarget(t);
    return r.ok ? 'accepted' : r.reason;
  };
  it('removes dot segments and decodes only unreserved escapes', () => {
    expect(ok('/a/./b/../c')).toEqual({ ok: true, path: '/a/c', query: '' });
    expect(ok('/%7Euser/%41%2e/x%20y%3a?q=%2F')).toEqual({
      ok: true,
      path: '/~user/A./x%20y%3A',
      query: 'q=%2F',
    });
    expect(ok('/a/%2e%2e/b').path).toBe('/b');
    expect(ok('/a/b/..').path).toBe('/a/');
  });
  it('drops ;parameters before resolving dot segments, and merges repeated slashes', () => {
    expect(ok('/public/..;/admin').path).toBe('/admin');
    expect(ok('/public/..;jsessionid=1/admin').path).toBe('/admin');
    expect(ok('/a;x=1/b;y').path).toBe('/a/b');
    expect(ok('/.;/admin').path).toBe('/admin');
    expect(ok('/a//b').path).toBe('/a/b');
    expect(ok('//admin').path).toBe('/admin');
    expect(ok('/a/b/').path).toBe('/a/b/');
    expect(ok('/a//').path).toBe('/a/');
    expect(ok('/').path).toBe('/');
    expect(ok('/caf%C3%A9').path).toBe('/caf%C3%A9');
    expect(no('/..;/x')).toMatch(/above the root/);
  });
  it('refuses climbing above the root, backslashes raw or encoded, NUL, bad escapes and fragments', () => {
    expect(no('/a/../../etc')).toMatch(/above the root/);
    expect(no('/%2e%2e/x')).toMatch(/above the root/);
    expect(no('/a%5cb')).toMatch(/%5C/);
    expect(no('/a\\b')).toMatch(/backslash/);
    expect(no('/a%00')).toMatch(/NUL/);
    expect(no('/a%zz')).toMatch(/malformed/);
    expect(no('/a#frag')).toMatch(/fragment/);
    expect(no('/a?x=%g1')).toMatch(/query/);
    expect(no('a/b')).toMatch(/start with/);
  });
  it('keeps an encoded slash in its segment and gives the reading of a server that decodes it', () => {
    expect(ok('/@types%2fnode')).toEqual({
      ok: true,
      path: '/@types%2Fnode',
      query: '',
      slashReading: '/@types/node',
    });
    // The decoded reading is of the path that goes upstream, after its own dot segments.
    expect(ok('/repos/a%2Fb/../c%2Fd')).toMatchObject({ path: '/repos/c%2Fd', slashReading: '/repos/c/d' });
    // Empty, . and .. names between encoded slashes: servers merge and resolve them differently.
    for (const t of [
      '/repos%2F..%2Fadmin',
      '/a%2F%2Fb',
      '/a%2F..%2F..%2Fetc',
      '/p%2F%2F..%2Fk',
      '/a%2F',
      '/%2Fa',
      '/a%2F.%2Fb',
    ])
      expect(no(t), t).toMatch(/encoded slash \(%2F\) next to an empty, \. or \.\. name/);
    expect(ok('/a/b').slashReading).toBeUndefined();
  });
  it('refuses the escapes servers read differently: %3B, controls, double encoding, non-UTF-8', () => {
    expect(no('/admin%3Bx/secret')).toMatch(/semicolon/);
    expect(no('/a%0Ab')).toMatch(/control/);
    expect(no('/a%7F')).toMatch(/control/);
    expect(no('/a%252Fb')).toMatch(/double-encoded/);
    expect(no('/%252e%252e/admin')).toMatch(/double-encoded/);
    expect(no('/a%C0%AFb')).toMatch(/not UTF-8/);
    expect(no('/a%FF')).toMatch(/not UTF-8/);
    expect(ok('/100%25').path).toBe('/100%25');
  });
});

describe('relay header', () => {
  it('parses TCP4 and TCP6 lines', () => {
    expect(parseProxyHeader(Buffer.from('PROXY TCP4 127.0.0.1 127.0.0.1 40123 3128\r\n'))).toEqual({
      family: 4,
      srcAddress: '127.0.0.1',
      dstAddress: '127.0.0.1',
      srcPort: 40123,
      dstPort: 3128,
      socketInode: null,
    });
    expect(parseProxyHeader(Buffer.from('PROXY TCP6 ::1 ::1 5 3128\r\n'))).toMatchObject({
      family: 6,
      srcPort: 5,
    });
  });
  it("reads the relay's seventh field, the client socket's inode (0: unknown)", () => {
    const full = 'PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff';
    expect(parseProxyHeader(Buffer.from(`${full} 65535 65535 4294967295\r\n`))).toMatchObject({
      srcPort: 65535,
      socketInode: 4294967295,
    });
    // The longest line the relay can write fits under the limit.
    expect(findProxyHeaderEnd(Buffer.from(`${full} 65535 65535 4294967295\r\n`))).toBeGreaterThan(0);
    expect(
      parseProxyHeader(Buffer.from('PROXY TCP4 127.0.0.1 127.0.0.1 40123 3128 2529632\r\n')).socketInode,
    ).toBe(2529632);
    expect(parseProxyHeader(Buffer.from('PROXY TCP4 127.0.0.1 127.0.0.1 40123 3128 0\r\n')).socketInode).toBe(
      null,
    );
  });
  it('refuses anything else', () => {
    for (const l of [
      'PROXY UNKNOWN\r\n',
      'PROXY TCP4 127.0.0.1 127.0.0.1 0400 3128\r\n',
      'PROXY TCP4 ::1 ::1 1 2\r\n',
      'PROXY TCP4 127.0.0.1 127.0.0.1 1 2\n',
      'PROXY TCP4 127.0.0.1 127.0.0.1 1 99999\r\n',
      'PROXY TCP4 127.0.0.1 127.0.0.1 1 2 -1\r\n',
      'PROXY TCP4 127.0.0.1 127.0.0.1 1 2 012\r\n',
      'PROXY TCP4 127.0.0.1 127.0.0.1 1 2 1e5\r\n',
      'PROXY TCP4 127.0.0.1 127.0.0.1 1 2 3 4\r\n',
      'PROXY TCP4 127.0.0.1 127.0.0.1 1 2 99999999999999999999\r\n',
    ]) {
      expect(() => parseProxyHeader(Buffer.from(l)), l).toThrow(ProxyHeaderError);
    }
    expect(() => findProxyHeaderEnd(Buffer.from('GET / HTTP/1.1\r\n'))).toThrow(ProxyHeaderError);
    expect(() => findProxyHeaderEnd(Buffer.from(`PROXY ${'1'.repeat(130)}`))).toThrow(/too long/);
    expect(findProxyHeaderEnd(Buffer.from('PROX'))).toBe(-1);
  });
});
