/**
 * The per-sandbox certificate authority that lets the proxy terminate TLS for inspected endpoints.
 *
 * Threat: the sandbox trusts this CA, so whoever holds its key can impersonate any site to the agent;
 * and a CA shared between sandboxes would let one sandbox's leaked trust serve another. Assumptions:
 * - one CA per sandbox (ECDSA P-256), created on the host; its private key lives in this process as a
 *   KeyObject and, only if the caller asks for persistence, in `<stateDir>/ca-key.pem` written with
 *   mode 0600 (the state dir is never mounted into a sandbox); only the certificate is exported;
 * - leaf certificates are minted on demand for the exact host (DNS SAN, or IP SAN for an IP literal),
 *   valid 30 days, cached in an LRU of TLS contexts; all leaves share one P-256 key held the same way;
 * - the CA is constrained to pathLen 0: it can issue leaves, not intermediate CAs.
 */
import {
  type KeyObject,
  X509Certificate,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
} from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type SecureContext, createSecureContext } from 'node:tls';
import type { CanonicalHost } from '../net/host-name.js';
import { parseIp } from '../net/ip.js';
import { type AltName, buildCertificate, derToPem, subjectNameOf } from './x509.js';

const HOUR = 3600_000;
const DAY = 24 * HOUR;
const LEAF_LIFETIME = 30 * DAY;
const CA_LIFETIME = 3650 * DAY;

export class TlsAuthorityError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TlsAuthorityError';
  }
}

interface CachedLeaf {
  context: SecureContext;
  certPem: string;
  expires: number;
}

export interface TlsAuthorityOptions {
  /** Sandbox name, shown in the CA's subject. */
  sandbox: string;
  /** Directory to persist the CA in (ca.pem, ca-key.pem 0600). Omit for an in-memory CA. */
  stateDir?: string | undefined;
  /** Cached leaf contexts (default 1000). */
  cacheSize?: number | undefined;
}

export class TlsAuthority {
  readonly caPem: string;
  private readonly caKey: KeyObject;
  private readonly caSpki: Buffer;
  /** The CA certificate's subject, DER, used verbatim as the issuer of every leaf. */
  private readonly caSubject: Buffer;
  private readonly leafKeyPem: string;
  private readonly leafSpki: Buffer;
  private readonly cache = new Map<string, CachedLeaf>();
  private readonly cacheSize: number;
  /** Leaves minted so far (tests and the bench look at it to see the cache work). */
  minted = 0;

  private constructor(caPem: string, caKey: KeyObject, options: TlsAuthorityOptions) {
    this.caPem = caPem;
    this.caKey = caKey;
    this.caSpki = createPublicKey(caKey).export({ type: 'spki', format: 'der' });
    const cert = new X509Certificate(caPem);
    this.caSubject = subjectNameOf(cert.raw);
    if (!cert.checkPrivateKey(caKey)) throw new TlsAuthorityError('CA certificate does not match its key');
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    this.leafKeyPem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    this.leafSpki = createPublicKey(privateKey).export({ type: 'spki', format: 'der' });
    this.cacheSize = options.cacheSize ?? 1000;
  }

  /** A CA loaded from `stateDir` if one is there, otherwise a new one (persisted if `stateDir`). */
  static create(options: TlsAuthorityOptions): TlsAuthority {
    const dir = options.stateDir;
    if (dir) {
      const certPath = join(dir, 'ca.pem');
      const keyPath = join(dir, 'ca-key.pem');
      if (existsSync(certPath) && existsSync(keyPath)) {
        return new TlsAuthority(
          readFileSync(certPath, 'utf8'),
          createPrivateKey(readFileSync(keyPath)),
          options,
        );
      }
    }
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const spki = createPublicKey(privateKey).export({ type: 'spki', format: 'der' });
    // X.509 bounds a common name to 64 characters.
    const subject = {
      commonName: `Carapace sandbox CA (${options.sandbox.slice(0, 40)})`,
      organization: 'Carapace',
    };
    const now = Date.now();
    const der = buildCertificate({
      subject,
      issuer: subject,
      subjectPublicKey: spki,
      issuerPublicKey: spki,
      issuerKey: privateKey,
      notBefore: new Date(now - HOUR),
      notAfter: new Date(now + CA_LIFETIME),
      isCa: true,
    });
    const pem = derToPem(der);
    if (dir) {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      const keyPath = join(dir, 'ca-key.pem');
      writeFileSync(keyPath, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
      chmodSync(keyPath, 0o600);
      writeFileSync(join(dir, 'ca.pem'), pem, { mode: 0o644 });
    }
    return new TlsAuthority(pem, privateKey, options);
  }

  /** The TLS server context for `host` (cached); the host must already be canonical. */
  contextFor(host: CanonicalHost): SecureContext {
    return this.leafFor(host).context;
  }

  /** The leaf certificate PEM for `host` (for tests and diagnostics). */
  certificateFor(host: CanonicalHost): string {
    return this.leafFor(host).certPem;
  }

  private leafFor(host: CanonicalHost): CachedLeaf {
    const now = Date.now();
    const hit = this.cache.get(host.host);
    if (hit && hit.expires - DAY > now) {
      // Refresh LRU position.
      this.cache.delete(host.host);
      this.cache.set(host.host, hit);
      return hit;
    }
    const alt: AltName = host.kind === 'dns' ? { dns: host.host } : { ip: Buffer.from(ipBytes(host.host)) };
    const expires = now + LEAF_LIFETIME;
    const der = buildCertificate({
      subject: { commonName: host.host.length <= 64 ? host.host : 'carapace-leaf' },
      issuer: this.caSubject,
      subjectPublicKey: this.leafSpki,
      issuerPublicKey: this.caSpki,
      issuerKey: this.caKey,
      notBefore: new Date(now - HOUR),
      notAfter: new Date(expires),
      isCa: false,
      altNames: [alt],
    });
    const certPem = derToPem(der);
    const context = createSecureContext({ key: this.leafKeyPem, cert: certPem, minVersion: 'TLSv1.2' });
    const leaf = { context, certPem, expires };
    this.minted++;
    this.cache.delete(host.host);
    this.cache.set(host.host, leaf);
    while (this.cache.size > this.cacheSize) {
      const oldest = this.cache.keys().next().value as string;
      this.cache.delete(oldest);
    }
    return leaf;
  }

  /** Cached leaves right now. */
  get cachedLeaves(): number {
    return this.cache.size;
  }
}

function ipBytes(text: string): Uint8Array {
  const ip = parseIp(text);
  if (!ip) throw new TlsAuthorityError(`not an IP literal: ${text}`);
  return ip.bytes;
}
