/**
 * SSRF guard: turns an allowed host name into the addresses the proxy may connect to.
 *
 * Threat: a policy allows `api.example.com`, and the name (through DNS the agent may influence, or a
 * rebinding attack) resolves to 127.0.0.1, 169.254.169.254 (cloud metadata), the host's LAN or the
 * operator's VPN. Assumptions and rules:
 * - the name is resolved ONCE here; the caller connects to one of the returned addresses (an IP
 *   literal), never to the name, so there is no second resolution an attacker could race;
 * - EVERY resolved address is checked, and one bad address refuses the whole name (a name that mixes
 *   a public and a private answer is a rebinding attempt or a misconfiguration either way);
 * - loopback, link-local, unspecified, multicast, broadcast and reserved (240/4) addresses are refused
 *   unless the operator trusts that exact ip:port (`allowLocal`);
 * - RFC 1918, CGNAT (100.64/10), ULA (fc00::/7) and other non-internet ranges are refused unless the
 *   endpoint's `allowed_ips` covers them;
 * - an endpoint with `allowed_ips` may reach only addresses inside them, public ones and
 *   operator-trusted ones included (OpenShell's semantics: the list narrows), and `allowed_ips` can
 *   never unlock loopback or link-local: only the operator's `allowLocal` can;
 * - IPv4-mapped, IPv4-compatible and NAT64 (64:ff9b::/96) IPv6 addresses are judged as the IPv4
 *   address they carry;
 * - the operator's hosts map (`resolve: {host: ip}`) replaces DNS for that name, and its answer is
 *   checked like any other;
 * - `host.openshell.internal` (OpenShell's name for the host) and `host.carapace.internal` are the
 *   host's loopback, 127.0.0.1 then ::1, on the port asked for — but only for a connection an endpoint
 *   naming that exact host admitted (`hostLocal`, never a wildcard): the policy's author named the
 *   host service, so no operator trust is needed. They never go to DNS or the hosts map, and they
 *   unlock nothing else: every other loopback or private address stays refused. Without such an
 *   endpoint the policy refuses the name before it gets here.
 */
import { lookup as dnsLookup } from 'node:dns/promises';
import type { CanonicalHost } from './host-name.js';
import {
  type AddressClass,
  type Cidr,
  type ParsedIp,
  cidrContains,
  classifyIp,
  effectiveIp,
  formatIp,
  parseCidr,
  parseIp,
} from './ip.js';

export interface CheckedAddress {
  /** The IP literal to connect to (as resolved; an embedded IPv4 is kept in its IPv6 form). */
  address: string;
  family: 4 | 6;
}

/** Why an address was refused: a host-local one, a private one, or outside the endpoint's list. */
export type RefusalKind = 'local' | 'private' | 'allowed-ips' | 'unresolved';

export type GuardResult =
  | { ok: true; addresses: CheckedAddress[] }
  | { ok: false; reason: string; address?: string; kind: RefusalKind };

/** Names of the host itself (its loopback) for endpoints that name them exactly. */
export const HOST_LOCAL_NAMES: readonly string[] = ['host.openshell.internal', 'host.carapace.internal'];
const HOST_LOCAL = new Set(HOST_LOCAL_NAMES);
const HOST_LOOPBACK = ['127.0.0.1', '::1'];

export function isHostLocalName(host: string): boolean {
  return HOST_LOCAL.has(host);
}

export type Resolver = (host: string) => Promise<{ address: string; family: number }[]>;

export interface AddressGuardOptions {
  /** Operator hosts map: name → IP literal. Overrides DNS. */
  hosts?: Record<string, string> | undefined;
  /** Operator trust for exact host-local upstreams, `127.0.0.1:8443` or `[::1]:8443`. */
  allowLocal?: readonly string[] | undefined;
  /** DNS resolution (tests replace it; default: the system resolver, all addresses). */
  resolver?: Resolver | undefined;
}

export class AddressGuardConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AddressGuardConfigError';
  }
}

const ALWAYS_REFUSED: ReadonlySet<AddressClass> = new Set([
  'loopback',
  'link-local',
  'unspecified',
  'multicast',
  'broadcast',
  'reserved',
]);

const systemResolver: Resolver = async (host) => dnsLookup(host, { all: true, verbatim: true });

function ipPortKey(ip: ParsedIp, port: number): string {
  return `${formatIp(effectiveIp(ip))}|${port}`;
}

function parseIpPort(text: string): { ip: ParsedIp; port: number } {
  const m = /^\[([^\]]+)\]:([0-9]{1,5})$/.exec(text) ?? /^([^:]+):([0-9]{1,5})$/.exec(text);
  const ip = m ? parseIp(m[1] as string) : null;
  const port = m ? Number(m[2]) : 0;
  if (!m || !ip || port < 1 || port > 65535) {
    throw new AddressGuardConfigError(
      `allowLocal entry must be IP:PORT or [IPv6]:PORT, got ${JSON.stringify(text)}`,
    );
  }
  return { ip, port };
}

export class AddressGuard {
  private readonly hosts = new Map<string, ParsedIp>();
  private readonly trusted = new Set<string>();
  private readonly resolver: Resolver;

  constructor(options: AddressGuardOptions = {}) {
    for (const [name, ip] of Object.entries(options.hosts ?? {})) {
      const parsed = parseIp(ip);
      if (!parsed)
        throw new AddressGuardConfigError(`hosts map: ${name} → ${JSON.stringify(ip)} is not an IP address`);
      let key = name.toLowerCase();
      if (key.endsWith('.')) key = key.slice(0, -1);
      this.hosts.set(key, parsed);
    }
    for (const entry of options.allowLocal ?? []) {
      const { ip, port } = parseIpPort(entry);
      this.trusted.add(ipPortKey(ip, port));
    }
    this.resolver = options.resolver ?? systemResolver;
  }

  /** Whether the operator trusts this exact address and port. */
  isTrustedLocal(ip: ParsedIp, port: number): boolean {
    return this.trusted.size > 0 && this.trusted.has(ipPortKey(ip, port));
  }

  /**
   * Resolve `host` once and check every address. `allowedIps` is the endpoint's list (CIDRs or
   * addresses); invalid entries throw CidrError, which the policy compiler should have caught.
   * `hostLocal`: an endpoint naming `host.openshell.internal` (or our alias) exactly admitted the
   * connection, so that name is the host's loopback.
   */
  async resolve(
    host: CanonicalHost,
    port: number,
    allowedIps?: readonly string[],
    hostLocal = false,
  ): Promise<GuardResult> {
    const loopbackGranted = hostLocal && host.kind === 'dns' && isHostLocalName(host.host);
    let candidates: ParsedIp[];
    if (host.kind !== 'dns') {
      const ip = parseIp(host.host);
      if (!ip) return { ok: false, reason: `invalid IP literal ${host.host}`, kind: 'unresolved' };
      candidates = [ip];
    } else if (loopbackGranted) {
      candidates = HOST_LOOPBACK.map((a) => parseIp(a) as ParsedIp);
    } else {
      const mapped = this.hosts.get(host.host);
      if (mapped) {
        candidates = [mapped];
      } else {
        let answers: { address: string; family: number }[];
        try {
          answers = await this.resolver(host.host);
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code ?? 'error';
          return { ok: false, reason: `name did not resolve (${code})`, kind: 'unresolved' };
        }
        candidates = [];
        for (const a of answers) {
          const ip = parseIp(a.address);
          if (!ip) return { ok: false, reason: `resolver returned a non-IP answer`, kind: 'unresolved' };
          candidates.push(ip);
        }
      }
    }
    if (candidates.length === 0)
      return { ok: false, reason: 'name resolved to no address', kind: 'unresolved' };
    const ranges: Cidr[] = (allowedIps ?? []).map((c) => parseCidr(c));
    const out: CheckedAddress[] = [];
    for (const ip of candidates) {
      const verdict = this.check(ip, port, ranges, loopbackGranted);
      if (verdict) return { ok: false, ...verdict, address: formatIp(ip) };
      out.push({ address: formatIp(ip), family: ip.family });
    }
    return { ok: true, addresses: out };
  }

  /**
   * Re-check one connected address (after a reload): null when still allowed, else the reason.
   * `hostLocal` as for resolve, for a tunnel to a host-local name.
   */
  checkAddress(
    address: string,
    port: number,
    allowedIps: readonly string[],
    hostLocal = false,
  ): string | null {
    const ip = parseIp(address);
    if (!ip) return `invalid address ${address}`;
    const verdict = this.check(
      ip,
      port,
      allowedIps.map((c) => parseCidr(c)),
      hostLocal,
    );
    return verdict?.reason ?? null;
  }

  /** null when allowed, else the reason. */
  private check(
    ip: ParsedIp,
    port: number,
    ranges: readonly Cidr[],
    loopbackGranted: boolean,
  ): { reason: string; kind: RefusalKind } | null {
    const kind = classifyIp(ip);
    const covered = ranges.some((r) => cidrContains(r, ip));
    // Formatted only for a refusal: this runs for every connection.
    const text = () => formatIp(effectiveIp(ip));
    // allowed_ips restricts even operator-trusted addresses: the policy author narrowed the endpoint.
    if (ranges.length > 0 && !covered)
      return { reason: `address ${text()} is outside the endpoint's allowed_ips`, kind: 'allowed-ips' };
    if (this.isTrustedLocal(ip, port)) return null;
    // Only the host's loopback, and only for the host-local names (resolve() picks the addresses).
    if (loopbackGranted && kind === 'loopback') return null;
    if (ALWAYS_REFUSED.has(kind)) {
      return {
        reason: `address ${text()} is ${kind} (refused unless the operator allows ${text()}:${port} as local)`,
        kind: 'local',
      };
    }
    if (kind !== 'public' && !covered)
      return {
        reason: `address ${text()} is ${kind} (refused unless allowed_ips covers it)`,
        kind: 'private',
      };
    return null;
  }
}

/** The hint a refusal by the guard gives the caller (responses.ts). */
export function guardHint(
  r: Extract<GuardResult, { ok: false }>,
): { kind: 'local'; address: string } | { kind: 'private'; address: string } | undefined {
  if (r.address === undefined) return undefined;
  if (r.kind === 'local') return { kind: 'local', address: r.address };
  if (r.kind === 'private') return { kind: 'private', address: r.address };
  return undefined;
}
