/**
 * A minimal X.509 v3 certificate builder (DER), enough for a private CA and the TLS server
 * certificates it issues, signed with ECDSA P-256 / SHA-256 through node:crypto.
 *
 * Why our own: Node can parse and verify certificates but not create them, and what we need is ~30
 * DER productions. Security assumptions: the issuing key is a KeyObject that never leaves the host
 * process; serial numbers are 128 random bits; every certificate we build is parsed back by
 * crypto.X509Certificate and verified against its issuer in the tests.
 */
import { type KeyObject, createHash, randomBytes, sign } from 'node:crypto';

export class X509Error extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'X509Error';
  }
}

// --- DER primitives ---------------------------------------------------------------------------

function length(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

function tlv(tag: number, ...content: Buffer[]): Buffer {
  const body = Buffer.concat(content);
  return Buffer.concat([Buffer.from([tag]), length(body.length), body]);
}

const seq = (...c: Buffer[]): Buffer => tlv(0x30, ...c);
const set = (...c: Buffer[]): Buffer => tlv(0x31, ...c);
const octets = (b: Buffer): Buffer => tlv(0x04, b);
const bool = (v: boolean): Buffer => tlv(0x01, Buffer.from([v ? 0xff : 0x00]));
const explicit = (n: number, ...c: Buffer[]): Buffer => tlv(0xa0 | n, ...c);
const utf8 = (s: string): Buffer => tlv(0x0c, Buffer.from(s, 'utf8'));

function integer(bytes: Buffer): Buffer {
  let b = bytes;
  while (b.length > 1 && b[0] === 0 && ((b[1] as number) & 0x80) === 0) b = b.subarray(1);
  if (((b[0] as number) & 0x80) !== 0) b = Buffer.concat([Buffer.from([0]), b]);
  return tlv(0x02, b);
}

function bitString(bytes: Buffer, unusedBits = 0): Buffer {
  return tlv(0x03, Buffer.from([unusedBits]), bytes);
}

function oid(dotted: string): Buffer {
  const parts = dotted.split('.').map(Number);
  const out: number[] = [40 * (parts[0] as number) + (parts[1] as number)];
  for (const p of parts.slice(2)) {
    const stack: number[] = [p & 0x7f];
    for (let v = Math.floor(p / 128); v > 0; v = Math.floor(v / 128)) stack.unshift((v & 0x7f) | 0x80);
    out.push(...stack);
  }
  return tlv(0x06, Buffer.from(out));
}

function time(d: Date): Buffer {
  const iso = d.toISOString().replace(/[-:T]/g, '').slice(0, 14); // YYYYMMDDHHMMSS
  if (d.getUTCFullYear() < 2050) return tlv(0x17, Buffer.from(iso.slice(2) + 'Z', 'ascii'));
  return tlv(0x18, Buffer.from(iso + 'Z', 'ascii'));
}

// --- X.509 structures --------------------------------------------------------------------------

const OID = {
  ecdsaWithSha256: '1.2.840.10045.4.3.2',
  commonName: '2.5.4.3',
  organization: '2.5.4.10',
  basicConstraints: '2.5.29.19',
  keyUsage: '2.5.29.15',
  extKeyUsage: '2.5.29.37',
  subjectAltName: '2.5.29.17',
  subjectKeyIdentifier: '2.5.29.14',
  authorityKeyIdentifier: '2.5.29.35',
  serverAuth: '1.3.6.1.5.5.7.3.1',
} as const;

export interface DistinguishedName {
  commonName: string;
  organization?: string;
}

function name(dn: DistinguishedName): Buffer {
  const rdns = [];
  if (dn.organization) rdns.push(set(seq(oid(OID.organization), utf8(dn.organization))));
  rdns.push(set(seq(oid(OID.commonName), utf8(dn.commonName))));
  return seq(...rdns);
}

function extension(id: string, critical: boolean, value: Buffer): Buffer {
  return critical ? seq(oid(id), bool(true), octets(value)) : seq(oid(id), octets(value));
}

export type AltName = { dns: string } | { ip: Buffer };

export interface CertificateSpec {
  subject: DistinguishedName;
  /** The issuer's Name: a DistinguishedName to encode, or the DER of its certificate's subject. */
  issuer: DistinguishedName | Buffer;
  /** DER SubjectPublicKeyInfo of the certified key. */
  subjectPublicKey: Buffer;
  /** DER SubjectPublicKeyInfo of the issuer (for the authority key identifier). */
  issuerPublicKey: Buffer;
  issuerKey: KeyObject;
  notBefore: Date;
  notAfter: Date;
  isCa: boolean;
  altNames?: AltName[];
}

/** SHA-1 of the subjectPublicKey BIT STRING contents (RFC 5280 §4.2.1.2 method 1). */
export function keyIdentifier(spki: Buffer): Buffer {
  // SPKI = SEQUENCE { AlgorithmIdentifier, BIT STRING }; the BIT STRING is the last TLV.
  const bits = lastTlvContent(spki);
  return createHash('sha1').update(bits.subarray(1)).digest();
}

interface Tlv {
  /** The whole element (tag, length, content). */
  raw: Buffer;
  content: Buffer;
}

/** The child elements of a constructed DER element (`der` starts with its tag). */
function children(der: Buffer): Tlv[] {
  const header = (at: number): { len: number; start: number } => {
    let len = der[at + 1] as number;
    let start = at + 2;
    if (len & 0x80) {
      const n = len & 0x7f;
      len = 0;
      for (let i = 0; i < n; i++) len = len * 256 + (der[at + 2 + i] as number);
      start += n;
    }
    return { len, start };
  };
  const outer = header(0);
  const out: Tlv[] = [];
  for (let off = outer.start; off < outer.start + outer.len;) {
    const { len, start } = header(off);
    out.push({ raw: der.subarray(off, start + len), content: der.subarray(start, start + len) });
    off = start + len;
  }
  return out;
}

function lastTlvContent(der: Buffer): Buffer {
  const list = children(der);
  return list[list.length - 1]?.content ?? Buffer.alloc(0);
}

/** The DER of a certificate's subject Name (to use verbatim as the issuer of what it signs). */
export function subjectNameOf(certDer: Buffer): Buffer {
  const tbs = children(certDer)[0];
  // TBSCertificate: [0] version, serial, signature, issuer, validity, subject, …
  const subject = tbs ? children(tbs.raw)[5] : undefined;
  if (!subject) throw new X509Error('not a v3 certificate');
  return subject.raw;
}

export function buildCertificate(spec: CertificateSpec): Buffer {
  const serial = randomBytes(16);
  serial[0] = ((serial[0] as number) & 0x7f) | 0x01;
  const sigAlg = seq(oid(OID.ecdsaWithSha256));
  const exts: Buffer[] = [];
  if (spec.isCa) {
    exts.push(extension(OID.basicConstraints, true, seq(bool(true), integer(Buffer.from([0])))));
    // digitalSignature (bit 0), keyCertSign (bit 5), cRLSign (bit 6): 1000 0110, one unused bit.
    exts.push(extension(OID.keyUsage, true, bitString(Buffer.from([0x86]), 1)));
  } else {
    exts.push(extension(OID.basicConstraints, true, seq()));
    exts.push(extension(OID.keyUsage, true, bitString(Buffer.from([0x80]), 7)));
    exts.push(extension(OID.extKeyUsage, false, seq(oid(OID.serverAuth))));
  }
  if (spec.altNames && spec.altNames.length > 0) {
    const names = spec.altNames.map((n) =>
      'dns' in n ? tlv(0x82, Buffer.from(n.dns, 'ascii')) : tlv(0x87, n.ip),
    );
    exts.push(extension(OID.subjectAltName, false, seq(...names)));
  }
  exts.push(extension(OID.subjectKeyIdentifier, false, octets(keyIdentifier(spec.subjectPublicKey))));
  exts.push(
    extension(OID.authorityKeyIdentifier, false, seq(tlv(0x80, keyIdentifier(spec.issuerPublicKey)))),
  );

  const tbs = seq(
    explicit(0, integer(Buffer.from([2]))),
    integer(serial),
    sigAlg,
    Buffer.isBuffer(spec.issuer) ? spec.issuer : name(spec.issuer),
    seq(time(spec.notBefore), time(spec.notAfter)),
    name(spec.subject),
    spec.subjectPublicKey,
    explicit(3, seq(...exts)),
  );
  const signature = sign('sha256', tbs, { key: spec.issuerKey, dsaEncoding: 'der' });
  return seq(tbs, sigAlg, bitString(signature));
}

export function derToPem(der: Buffer, label = 'CERTIFICATE'): string {
  const b64 = der
    .toString('base64')
    .replace(/(.{64})/g, '$1\n')
    .replace(/\n$/, '');
  return `-----BEGIN ${label}-----\n${b64}\n-----END ${label}-----\n`;
}
