import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { describe, expect, it } from 'vitest';
import { buildCaBundle, sandboxProxyEnv, writeTrustFiles } from '../../src/proxy/sandbox-env.js';
import { TlsAuthority } from '../../src/proxy/tls/tls-authority.js';

describe('TlsAuthority', () => {
  it('issues leaves that chain to the sandbox CA, with the host as SAN', () => {
    const a = TlsAuthority.create({ sandbox: 't' });
    const ca = new X509Certificate(a.caPem);
    expect(ca.ca).toBe(true);
    expect(ca.verify(ca.publicKey)).toBe(true);
    const leaf = new X509Certificate(a.certificateFor({ host: 'api.example.test', kind: 'dns' }));
    expect(leaf.ca).toBe(false);
    expect(leaf.checkIssued(ca)).toBe(true);
    expect(leaf.verify(ca.publicKey)).toBe(true);
    expect(leaf.subjectAltName).toBe('DNS:api.example.test');
    expect(leaf.checkHost('api.example.test')).toBe('api.example.test');
    expect(leaf.checkHost('other.example.test')).toBeUndefined();
    const v6 = new X509Certificate(a.certificateFor({ host: '::1', kind: 'ipv6' }));
    expect(v6.checkIP('::1')).toBe('::1');
    const v4 = new X509Certificate(a.certificateFor({ host: '10.1.2.3', kind: 'ipv4' }));
    expect(v4.checkIP('10.1.2.3')).toBe('10.1.2.3');
  });

  it('caches leaves (LRU) and evicts beyond its size', () => {
    const a = TlsAuthority.create({ sandbox: 't', cacheSize: 2 });
    const h = (n: string) => ({ host: n, kind: 'dns' as const });
    const c1 = a.contextFor(h('a.test'));
    expect(a.contextFor(h('a.test'))).toBe(c1);
    a.contextFor(h('b.test'));
    a.contextFor(h('a.test')); // a is now most recent
    a.contextFor(h('c.test')); // evicts b
    expect(a.cachedLeaves).toBe(2);
    const before = a.minted;
    a.contextFor(h('a.test'));
    expect(a.minted).toBe(before);
    a.contextFor(h('b.test'));
    expect(a.minted).toBe(before + 1);
  });

  it('persists the key with mode 0600 and reloads the same CA', () => {
    const dir = join(mkdtempSync(join(tmpdir(), 'carapace-ca-')), 'ca');
    const a = TlsAuthority.create({ sandbox: 't', stateDir: dir });
    expect(statSync(join(dir, 'ca-key.pem')).mode & 0o777).toBe(0o600);
    expect(readFileSync(join(dir, 'ca.pem'), 'utf8')).toBe(a.caPem);
    const b = TlsAuthority.create({ sandbox: 't', stateDir: dir });
    expect(b.caPem).toBe(a.caPem);
    const leaf = new X509Certificate(b.certificateFor({ host: 'x.test', kind: 'dns' }));
    expect(leaf.verify(new X509Certificate(a.caPem).publicKey)).toBe(true);
    // Loaded under another name, the leaves still name the stored CA as their issuer.
    const c = TlsAuthority.create({ sandbox: 'renamed', stateDir: dir });
    const leaf2 = new X509Certificate(c.certificateFor({ host: 'y.test', kind: 'dns' }));
    expect(leaf2.checkIssued(new X509Certificate(a.caPem))).toBe(true);
  });

  it('serves a real TLS handshake that a client trusting only the CA accepts, with ALPN http/1.1', async () => {
    const a = TlsAuthority.create({ sandbox: 't' });
    const server = tls.createServer(
      {
        SNICallback: (name, cb) => cb(null, a.contextFor({ host: name, kind: 'dns' })),
        ALPNProtocols: ['http/1.1'],
      },
      (s) => s.end('hello'),
    );
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    const got = await new Promise<{ authorized: boolean; alpn: string | false; data: string }>(
      (resolve, reject) => {
        const c = tls.connect({
          port,
          host: '127.0.0.1',
          servername: 'api.example.test',
          ca: a.caPem,
          ALPNProtocols: ['http/1.1'],
        });
        let data = '';
        c.on('data', (d) => (data += d));
        c.on('end', () => resolve({ authorized: c.authorized, alpn: c.alpnProtocol ?? false, data }));
        c.on('error', reject);
      },
    );
    server.close();
    expect(got).toEqual({ authorized: true, alpn: 'http/1.1', data: 'hello' });
  });
});

describe('sandbox trust and environment', () => {
  it('points every stack at the relay and gives replacing variables the combined bundle', () => {
    const env = sandboxProxyEnv({ caPath: '/c/ca.pem', bundlePath: '/c/bundle.pem' });
    for (const n of ['HTTP_PROXY', 'https_proxy', 'ALL_PROXY', 'all_proxy', 'GRPC_PROXY']) {
      expect(env[n]).toBe('http://127.0.0.1:3128');
    }
    expect(env.NO_PROXY).toBe('localhost,127.0.0.1,::1');
    expect(env.NODE_USE_ENV_PROXY).toBe('1');
    expect(env.NODE_EXTRA_CA_CERTS).toBe('/c/ca.pem');
    for (const n of [
      'SSL_CERT_FILE',
      'REQUESTS_CA_BUNDLE',
      'CURL_CA_BUNDLE',
      'GIT_SSL_CAINFO',
      'PIP_CERT',
      'DENO_CERT',
      'npm_config_cafile',
    ]) {
      expect(env[n]).toBe('/c/bundle.pem');
    }
  });

  it('builds the bundle from the system roots plus the CA, and writes no key', () => {
    const a = TlsAuthority.create({ sandbox: 't' });
    const dir = mkdtempSync(join(tmpdir(), 'carapace-trust-'));
    const files = writeTrustFiles(dir, a.caPem);
    const bundle = readFileSync(files.bundleFile, 'utf8');
    expect(bundle.endsWith(a.caPem)).toBe(true);
    expect(bundle.length).toBeGreaterThan(a.caPem.length + 1000);
    expect(bundle).not.toContain('PRIVATE KEY');
    expect(readFileSync(files.caFile, 'utf8')).toBe(a.caPem);
    expect(buildCaBundle(a.caPem, join(dir, 'missing.crt'))).toContain(a.caPem);
  });
});

describe('certificates read by an independent implementation', () => {
  it('openssl verifies a leaf against the sandbox CA and reads its SAN', async () => {
    const { execFileSync } = await import('node:child_process');
    const a = TlsAuthority.create({ sandbox: 'ossl' });
    const dir = mkdtempSync(join(tmpdir(), 'carapace-ossl-'));
    const { writeFileSync } = await import('node:fs');
    writeFileSync(join(dir, 'ca.pem'), a.caPem);
    writeFileSync(join(dir, 'leaf.pem'), a.certificateFor({ host: 'api.example.test', kind: 'dns' }));
    const verify = execFileSync('openssl', [
      'verify',
      '-CAfile',
      join(dir, 'ca.pem'),
      '-purpose',
      'sslserver',
      join(dir, 'leaf.pem'),
    ]).toString();
    expect(verify).toMatch(/leaf\.pem: OK/);
    const text = execFileSync('openssl', [
      'x509',
      '-in',
      join(dir, 'leaf.pem'),
      '-noout',
      '-text',
    ]).toString();
    expect(text).toMatch(/DNS:api\.example\.test/);
    expect(text).toMatch(/ecdsa-with-SHA256/);
    expect(text).toMatch(/CA:FALSE/);
    const caText = execFileSync('openssl', [
      'x509',
      '-in',
      join(dir, 'ca.pem'),
      '-noout',
      '-text',
    ]).toString();
    expect(caText).toMatch(/CA:TRUE, pathlen:0/);
    expect(caText).toMatch(/prime256v1|P-256/);
  });
});
