/**
 * IP addresses and CIDR ranges of `allowed_ips`.
 *
 * `allowed_ips` lets a host resolve to addresses the proxy otherwise refuses as SSRF targets
 * (private ranges). Loopback, link-local (cloud metadata lives at 169.254.169.254) and the
 * unspecified address are never allowed: an entry that overlaps them is rejected, so `0.0.0.0/0`
 * cannot be used to switch the SSRF guard off.
 */
import { isIP } from 'node:net';

export interface IpRange {
  family: 4 | 6;
  /** The network address as an integer (IPv4: 32 bits, IPv6: 128 bits). */
  network: bigint;
  prefix: number;
}

function parseV4(text: string): bigint {
  return text.split('.').reduce((acc, part) => (acc << 8n) | BigInt(Number(part)), 0n);
}

function parseV6(text: string): bigint {
  let head = text;
  let tail: bigint[] = [];
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(head);
  if (v4?.[1] !== undefined) {
    const n = parseV4(v4[1]);
    tail = [n >> 16n, n & 0xffffn];
    head = head.slice(0, head.length - v4[1].length);
    if (head.endsWith(':') && !head.endsWith('::')) head = head.slice(0, -1);
  }
  const [left = '', right] = head.split('::');
  const groups = (s: string): bigint[] => (s === '' ? [] : s.split(':').map((g) => BigInt(parseInt(g, 16))));
  const l = groups(left);
  const r = [...(right === undefined ? [] : groups(right)), ...tail];
  const fill = right === undefined ? [] : Array<bigint>(8 - l.length - r.length).fill(0n);
  const all = right === undefined ? [...l, ...tail] : [...l, ...fill, ...r];
  return all.reduce((acc, g) => (acc << 16n) | g, 0n);
}

/** Parses `10.0.0.0/8`, `192.168.1.5`, `fd00::/8`; returns why it is invalid otherwise. */
export function parseIpRange(raw: string): IpRange | { error: string } {
  const text = raw.trim();
  const slash = text.indexOf('/');
  const addr = slash < 0 ? text : text.slice(0, slash);
  const family = isIP(addr);
  if (family === 0) {
    return { error: `"${raw}" is not an IP address or CIDR range (e.g. 10.0.0.0/8, 192.168.1.10, fd00::/8)` };
  }
  const bits = family === 4 ? 32 : 128;
  let prefix = bits;
  if (slash >= 0) {
    const p = text.slice(slash + 1);
    if (!/^\d{1,3}$/.test(p) || Number(p) > bits) {
      return { error: `"${raw}" has an invalid prefix length "/${p}"; IPv${family} allows /0 to /${bits}` };
    }
    prefix = Number(p);
  }
  const value = family === 4 ? parseV4(addr) : parseV6(addr);
  const hostBits = BigInt(bits - prefix);
  const network = (value >> hostBits) << hostBits;
  if (network !== value) {
    return {
      error: `"${raw}" has host bits set; did you mean ${formatRange({ family: family === 4 ? 4 : 6, network, prefix })}?`,
    };
  }
  return { family: family === 4 ? 4 : 6, network, prefix };
}

export function formatRange(range: IpRange): string {
  if (range.family === 4) {
    const n = range.network;
    const octets = [24n, 16n, 8n, 0n].map((s) => String((n >> s) & 0xffn));
    return `${octets.join('.')}/${range.prefix}`;
  }
  const groups: string[] = [];
  for (let s = 112n; s >= 0n; s -= 16n) groups.push(((range.network >> s) & 0xffffn).toString(16));
  let best = -1;
  let bestLength = 1;
  for (let i = 0; i < groups.length;) {
    let j = i;
    while (j < groups.length && groups[j] === '0') j++;
    if (j - i > bestLength) [best, bestLength] = [i, j - i];
    i = j === i ? i + 1 : j;
  }
  const text =
    best < 0
      ? groups.join(':')
      : `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLength).join(':')}`;
  return `${text}/${range.prefix}`;
}

function overlaps(a: IpRange, b: IpRange): boolean {
  if (a.family !== b.family) return false;
  const bits = a.family === 4 ? 32 : 128;
  const shift = BigInt(bits - Math.min(a.prefix, b.prefix));
  return a.network >> shift === b.network >> shift;
}

const FORBIDDEN: { range: string; what: string }[] = [
  { range: '127.0.0.0/8', what: 'loopback' },
  { range: '169.254.0.0/16', what: 'link-local (cloud metadata)' },
  { range: '0.0.0.0/32', what: 'the unspecified address' },
  { range: '::1/128', what: 'loopback' },
  { range: 'fe80::/10', what: 'link-local' },
  { range: '::/128', what: 'the unspecified address' },
  { range: '::ffff:127.0.0.0/104', what: 'loopback (IPv4-mapped)' },
  { range: '::ffff:169.254.0.0/112', what: 'link-local (IPv4-mapped)' },
];

const FORBIDDEN_RANGES = FORBIDDEN.map((f) => ({ ...f, parsed: parseIpRange(f.range) as IpRange }));

/** Why an allowed_ips entry may not be used, or null when it may. */
export function allowedIpProblem(raw: string): string | null {
  const parsed = parseIpRange(raw);
  if ('error' in parsed) return parsed.error;
  for (const f of FORBIDDEN_RANGES) {
    if (overlaps(parsed, f.parsed)) {
      return `"${raw}" includes ${f.what} addresses (${f.range}), which the proxy never connects to; narrow the range`;
    }
  }
  return null;
}
