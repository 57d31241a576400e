/**
 * IP address parsing and classification, shared by the host canonicaliser and the SSRF guard.
 *
 * Threat: an agent reaches a host-local or internal service by naming it in a form the policy does not
 * recognise (IPv4-mapped IPv6, NAT64, a zero-compressed IPv6, an upper-case hex group). Every address
 * is therefore parsed into 16 bytes and classified from the bytes, never from the text; an address that
 * embeds an IPv4 address (mapped, compatible, NAT64 well-known prefix) is classified as that IPv4.
 *
 * Only the strict textual forms are accepted here: dotted-quad IPv4 with four decimal octets and no
 * leading zeros, and RFC 4291 IPv6 without a zone. Everything else is not an IP literal for us.
 */

export type IpFamily = 4 | 6;

export interface ParsedIp {
  family: IpFamily;
  /** 4 bytes for IPv4, 16 for IPv6. */
  bytes: Uint8Array;
}

const DEC_OCTET = /^(0|[1-9][0-9]{0,2})$/;

export function parseIpv4(text: string): Uint8Array | null {
  const parts = text.split('.');
  if (parts.length !== 4) return null;
  const out = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const p = parts[i] as string;
    if (!DEC_OCTET.test(p)) return null;
    const n = Number(p);
    if (n > 255) return null;
    out[i] = n;
  }
  return out;
}

export function parseIpv6(text: string): Uint8Array | null {
  if (text.length === 0 || text.length > 45 || text.includes('%')) return null;
  let head = text;
  let v4tail: Uint8Array | null = null;
  const lastColon = text.lastIndexOf(':');
  if (lastColon >= 0 && text.indexOf('.', lastColon) > lastColon) {
    v4tail = parseIpv4(text.slice(lastColon + 1));
    if (!v4tail) return null;
    head = text.slice(0, lastColon + 1) + '0:0';
  }
  const doubleAt = head.indexOf('::');
  if (doubleAt !== head.lastIndexOf('::')) return null;
  const groups: number[] = [];
  const parseGroups = (s: string): number[] | null => {
    if (s === '') return [];
    const out: number[] = [];
    for (const g of s.split(':')) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return null;
      out.push(parseInt(g, 16));
    }
    return out;
  };
  if (doubleAt >= 0) {
    const left = parseGroups(head.slice(0, doubleAt));
    const right = parseGroups(head.slice(doubleAt + 2));
    if (!left || !right || left.length + right.length > 7) return null;
    groups.push(...left, ...new Array<number>(8 - left.length - right.length).fill(0), ...right);
  } else {
    const all = parseGroups(head);
    if (!all || all.length !== 8) return null;
    groups.push(...all);
  }
  const out = new Uint8Array(16);
  for (let i = 0; i < 8; i++) {
    const g = groups[i] as number;
    out[i * 2] = g >> 8;
    out[i * 2 + 1] = g & 0xff;
  }
  if (v4tail) out.set(v4tail, 12);
  return out;
}

export function parseIp(text: string): ParsedIp | null {
  const v4 = parseIpv4(text);
  if (v4) return { family: 4, bytes: v4 };
  const v6 = parseIpv6(text);
  if (v6) return { family: 6, bytes: v6 };
  return null;
}

export function formatIp(ip: ParsedIp): string {
  if (ip.family === 4) return Array.from(ip.bytes).join('.');
  const groups: number[] = [];
  for (let i = 0; i < 8; i++)
    groups.push(((ip.bytes[i * 2] as number) << 8) | (ip.bytes[i * 2 + 1] as number));
  // RFC 5952: compress the longest run (≥ 2) of zero groups, the first one on a tie.
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  const left = hex.slice(0, bestStart).join(':');
  const right = hex.slice(bestStart + bestLen).join(':');
  return `${left}::${right}`;
}

/**
 * The IPv4 address an IPv6 address stands for, if it embeds one in a way that reaches IPv4 hosts:
 * IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d, deprecated but still routed by some
 * stacks) and the NAT64 well-known prefix 64:ff9b::/96.
 */
export function embeddedIpv4(bytes: Uint8Array): Uint8Array | null {
  if (bytes.length !== 16) return null;
  const zeros = (from: number, to: number): boolean => bytes.slice(from, to).every((b) => b === 0);
  if (zeros(0, 10) && bytes[10] === 0xff && bytes[11] === 0xff) return bytes.slice(12);
  // ::a.b.c.d, but not :: and ::1 themselves (unspecified / loopback in their own right).
  if (zeros(0, 12) && !zeros(12, 15)) return bytes.slice(12);
  if (bytes[0] === 0x00 && bytes[1] === 0x64 && bytes[2] === 0xff && bytes[3] === 0x9b && zeros(4, 12)) {
    return bytes.slice(12);
  }
  return null;
}

/** Reduce an address to the form that decides where packets go: embedded IPv4 becomes IPv4. */
export function effectiveIp(ip: ParsedIp): ParsedIp {
  if (ip.family === 6) {
    const v4 = embeddedIpv4(ip.bytes);
    if (v4) return { family: 4, bytes: v4 };
  }
  return ip;
}

export interface Cidr {
  family: IpFamily;
  bytes: Uint8Array;
  prefix: number;
}

export class CidrError extends Error {
  constructor(readonly text: string) {
    super(`not an IP address or CIDR range: ${JSON.stringify(text)}`);
    this.name = 'CidrError';
  }
}

/** `10.0.0.0/8`, `fd00::/8`, or a bare address (a /32 or /128). Throws CidrError. */
export function parseCidr(text: string): Cidr {
  const slash = text.indexOf('/');
  const addr = slash < 0 ? text : text.slice(0, slash);
  const ip = parseIp(addr);
  if (!ip) throw new CidrError(text);
  const max = ip.family === 4 ? 32 : 128;
  let prefix = max;
  if (slash >= 0) {
    const p = text.slice(slash + 1);
    if (!/^[0-9]{1,3}$/.test(p) || Number(p) > max) throw new CidrError(text);
    prefix = Number(p);
  }
  return { family: ip.family, bytes: ip.bytes, prefix };
}

export function cidrContains(cidr: Cidr, ip: ParsedIp): boolean {
  let candidate = ip;
  let range = cidr;
  if (candidate.family !== range.family) {
    // Compare an IPv4 range with an embedded IPv4 and vice versa.
    candidate = effectiveIp(candidate);
    if (range.family === 6) {
      const v4 = embeddedIpv4(range.bytes);
      if (v4 && range.prefix >= 96) range = { family: 4, bytes: v4, prefix: range.prefix - 96 };
    }
    if (candidate.family !== range.family) return false;
  }
  let bits = range.prefix;
  for (let i = 0; bits > 0; i++, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    if (((candidate.bytes[i] as number) & mask) !== ((range.bytes[i] as number) & mask)) return false;
  }
  return true;
}

/** Why an address is special. `public` addresses need no operator decision. */
export type AddressClass =
  | 'loopback'
  | 'link-local'
  | 'unspecified'
  | 'multicast'
  | 'broadcast'
  | 'reserved'
  | 'private'
  | 'cgnat'
  | 'unique-local'
  | 'public';

const V4_TABLE: [string, AddressClass][] = [
  ['0.0.0.0/8', 'unspecified'],
  ['127.0.0.0/8', 'loopback'],
  ['169.254.0.0/16', 'link-local'],
  ['224.0.0.0/4', 'multicast'],
  ['255.255.255.255/32', 'broadcast'],
  ['240.0.0.0/4', 'reserved'],
  ['10.0.0.0/8', 'private'],
  ['172.16.0.0/12', 'private'],
  ['192.168.0.0/16', 'private'],
  ['100.64.0.0/10', 'cgnat'],
  // IETF protocol assignments, benchmarking: not on the internet; treat like private space.
  ['192.0.0.0/24', 'private'],
  ['198.18.0.0/15', 'private'],
];
const V6_TABLE: [string, AddressClass][] = [
  ['::/128', 'unspecified'],
  ['::1/128', 'loopback'],
  ['fe80::/10', 'link-local'],
  ['ff00::/8', 'multicast'],
  ['fc00::/7', 'unique-local'],
  // Deprecated site-local: some stacks still route it internally.
  ['fec0::/10', 'unique-local'],
];
const TABLE = [...V4_TABLE, ...V6_TABLE].map(([c, k]) => [parseCidr(c), k] as const);

export function classifyIp(ip: ParsedIp): AddressClass {
  const eff = effectiveIp(ip);
  for (const [cidr, kind] of TABLE) if (cidr.family === eff.family && cidrContains(cidr, eff)) return kind;
  return 'public';
}
