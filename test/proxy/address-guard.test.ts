/** The SSRF guard: every resolved address is checked; operator trust and allowed_ips are exact. */
import { describe, expect, it } from 'vitest';
import { AddressGuard, AddressGuardConfigError } from '../../src/proxy/net/address-guard.js';
import { classifyIp, parseIp } from '../../src/proxy/net/ip.js';

const dns = (answers: Record<string, string[]>) => async (host: string) => {
  const a = answers[host];
  if (!a) throw Object.assign(new Error('nx'), { code: 'ENOTFOUND' });
  return a.map((address) => ({ address, family: address.includes(':') ? 6 : 4 }));
};
const name = (host: string) => ({ host, kind: 'dns' as const });

describe('classifyIp', () => {
  const cases: [string, string][] = [
    ['127.0.0.1', 'loopback'],
    ['169.254.169.254', 'link-local'],
    ['0.0.0.0', 'unspecified'],
    ['224.0.0.1', 'multicast'],
    ['255.255.255.255', 'broadcast'],
    ['10.1.2.3', 'private'],
    ['172.16.0.1', 'private'],
    ['192.168.1.1', 'private'],
    ['100.64.0.1', 'cgnat'],
    ['8.8.8.8', 'public'],
    ['::1', 'loopback'],
    ['::', 'unspecified'],
    ['fe80::1', 'link-local'],
    ['fd00::1', 'unique-local'],
    ['ff02::1', 'multicast'],
    ['::ffff:127.0.0.1', 'loopback'],
    ['::ffff:169.254.169.254', 'link-local'],
    ['::ffff:10.0.0.1', 'private'],
    ['64:ff9b::a9fe:a9fe', 'link-local'],
    ['::127.0.0.1', 'loopback'],
    ['2606:4700::1111', 'public'],
  ];
  for (const [ip, want] of cases) it(`${ip} is ${want}`, () => expect(classifyIp(parseIp(ip)!)).toBe(want));
});

describe('AddressGuard', () => {
  it('refuses loopback and metadata answers, allowing exactly the trusted ip:port', async () => {
    const g = new AddressGuard({
      allowLocal: ['127.0.0.1:8443'],
      resolver: dns({ 'a.test': ['127.0.0.1'], 'm.test': ['169.254.169.254'] }),
    });
    expect(await g.resolve(name('a.test'), 8443)).toEqual({
      ok: true,
      addresses: [{ address: '127.0.0.1', family: 4 }],
    });
    expect((await g.resolve(name('a.test'), 8444)).ok).toBe(false);
    const m = await g.resolve(name('m.test'), 80);
    expect(m).toMatchObject({ ok: false, address: '169.254.169.254' });
  });

  it('checks every address: one private answer among public ones refuses the name', async () => {
    const g = new AddressGuard({ resolver: dns({ 'mix.test': ['93.184.216.34', '10.0.0.7'] }) });
    const r = await g.resolve(name('mix.test'), 443);
    expect(r).toMatchObject({ ok: false, address: '10.0.0.7' });
  });

  it('lets allowed_ips through private ranges, never loopback, and narrows public answers', async () => {
    const g = new AddressGuard({
      resolver: dns({ 'db.test': ['10.20.0.5'], 'lo.test': ['127.0.0.1'], 'pub.test': ['93.184.216.34'] }),
    });
    expect((await g.resolve(name('db.test'), 5432)).ok).toBe(false);
    expect(await g.resolve(name('db.test'), 5432, ['10.20.0.0/16'])).toEqual({
      ok: true,
      addresses: [{ address: '10.20.0.5', family: 4 }],
    });
    expect((await g.resolve(name('db.test'), 5432, ['10.21.0.0/16'])).ok).toBe(false);
    expect((await g.resolve(name('lo.test'), 80, ['127.0.0.0/8'])).ok).toBe(false);
    expect((await g.resolve(name('pub.test'), 443)).ok).toBe(true);
    expect((await g.resolve(name('pub.test'), 443, ['10.0.0.0/8'])).ok).toBe(false);
  });

  it('judges IPv4-mapped IPv6 answers as IPv4 (no bypass through ::ffff:)', async () => {
    const g = new AddressGuard({
      allowLocal: ['127.0.0.1:80'],
      resolver: dns({ 'v6.test': ['::ffff:169.254.169.254'], 'lo6.test': ['::ffff:127.0.0.1'] }),
    });
    expect((await g.resolve(name('v6.test'), 80)).ok).toBe(false);
    expect((await g.resolve(name('lo6.test'), 80)).ok).toBe(true);
    expect((await g.resolve(name('v6.test'), 80, ['169.254.0.0/16'])).ok).toBe(false);
  });

  it('uses the operator hosts map instead of DNS, and IP literals as they are', async () => {
    const g = new AddressGuard({ hosts: { 'API.test.': '10.9.9.9' }, resolver: dns({}) });
    expect(await g.resolve(name('api.test'), 443, ['10.9.9.9'])).toEqual({
      ok: true,
      addresses: [{ address: '10.9.9.9', family: 4 }],
    });
    expect(await g.resolve({ host: '::1', kind: 'ipv6' }, 443)).toMatchObject({ ok: false });
    expect(await g.resolve(name('nx.test'), 443)).toMatchObject({
      ok: false,
      reason: expect.stringMatching(/did not resolve/),
    });
  });

  it('rejects malformed operator settings', () => {
    expect(() => new AddressGuard({ allowLocal: ['127.0.0.1'] })).toThrow(AddressGuardConfigError);
    expect(() => new AddressGuard({ hosts: { a: 'not-an-ip' } })).toThrow(AddressGuardConfigError);
  });
});
