/**
 * Canonical host names and authorities (`host:port`) as the proxy sees them in CONNECT targets,
 * absolute-form URLs, Host headers and TLS SNI.
 *
 * Threat: a name that the policy does not recognise but a resolver or a socket call turns into a
 * forbidden destination. `getaddrinfo`/`inet_aton` accept `2130706433`, `0x7f.1`, `0177.0.0.1` and
 * `127.1` as 127.0.0.1; browsers' URL parsers rewrite them too. Decision: the only IPv4 literal form we
 * accept is the dotted quad of four decimal octets without leading zeros; any other name whose last
 * label is numeric (decimal, or 0x-hex) is refused with its own reason, before policy, so such a form
 * can neither match a policy host by accident nor reach the resolver. IPv6 literals are accepted in
 * brackets and reduced to RFC 5952 form (`[0:0::1]` → `::1`); zone ids are refused.
 *
 * Other choices: names are lower-cased ASCII; one trailing dot (the FQDN form) is removed, so
 * `api.github.com.` is judged, resolved and verified as `api.github.com`; non-ASCII (an IDN not in
 * punycode), percent signs, empty labels, labels over 63 bytes and names over 253 bytes are refused.
 */
import { formatIp, parseIpv4, parseIpv6 } from './ip.js';

export type HostKind = 'dns' | 'ipv4' | 'ipv6';

export interface CanonicalHost {
  /** Lower-case DNS name, dotted-quad IPv4, or RFC 5952 IPv6 (no brackets). */
  host: string;
  kind: HostKind;
}

export class HostNameError extends Error {
  constructor(readonly reason: string) {
    super(reason);
    this.name = 'HostNameError';
  }
}

const LABEL = /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/;
const NUMERIC_LABEL = /^(?:[0-9]+|0x[0-9a-f]*)$/;

/** Canonicalise a bare host (no port). IPv6 must be bracketed when `bracketedV6` is true. */
export function canonicalHost(raw: string, bracketedV6 = true): CanonicalHost {
  if (raw.length === 0) throw new HostNameError('empty host');
  if (raw.startsWith('[')) {
    if (!raw.endsWith(']')) throw new HostNameError('unterminated IPv6 literal');
    const inner = raw.slice(1, -1);
    if (inner.includes('%')) throw new HostNameError('IPv6 zone identifiers are not allowed');
    const v6 = parseIpv6(inner);
    if (!v6) throw new HostNameError('invalid IPv6 literal');
    return { host: formatIp({ family: 6, bytes: v6 }), kind: 'ipv6' };
  }
  if (!bracketedV6 && raw.includes(':')) {
    const v6 = parseIpv6(raw);
    if (!v6) throw new HostNameError('invalid IPv6 literal');
    return { host: formatIp({ family: 6, bytes: v6 }), kind: 'ipv6' };
  }
  if (raw.length > 254) throw new HostNameError('host name too long');
  if (/[^\x21-\x7e]/.test(raw))
    throw new HostNameError('non-ASCII or control character in host (use punycode)');
  let host = raw.toLowerCase();
  if (host.endsWith('.')) host = host.slice(0, -1);
  if (host.length === 0 || host.length > 253) throw new HostNameError('invalid host name length');
  const labels = host.split('.');
  const last = labels[labels.length - 1] as string;
  if (NUMERIC_LABEL.test(last)) {
    const v4 = parseIpv4(host);
    if (v4 && !raw.endsWith('.')) return { host, kind: 'ipv4' };
    throw new HostNameError('non-canonical IPv4 literal (decimal, octal, hex or shortened form)');
  }
  for (const label of labels) {
    if (!LABEL.test(label)) throw new HostNameError(`invalid host name label ${JSON.stringify(label)}`);
  }
  return { host, kind: 'dns' };
}

export interface Authority extends CanonicalHost {
  port: number;
}

function parsePort(text: string): number {
  if (!/^[0-9]{1,5}$/.test(text)) throw new HostNameError('invalid port');
  const port = Number(text);
  if (port < 1 || port > 65535) throw new HostNameError('port out of range');
  return port;
}

/**
 * `host:port`, `[v6]:port`; the port is required unless `defaultPort` is given. Userinfo (`a@b`) is
 * refused: it has no meaning in an authority we route and is a classic confusion vector.
 */
export function parseAuthority(text: string, defaultPort?: number): Authority {
  if (text.includes('@')) throw new HostNameError('userinfo in authority');
  let hostPart: string;
  let portPart: string | undefined;
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close < 0) throw new HostNameError('unterminated IPv6 literal');
    hostPart = text.slice(0, close + 1);
    const rest = text.slice(close + 1);
    if (rest !== '') {
      if (!rest.startsWith(':')) throw new HostNameError('garbage after IPv6 literal');
      portPart = rest.slice(1);
    }
  } else {
    const colon = text.lastIndexOf(':');
    if (colon >= 0) {
      hostPart = text.slice(0, colon);
      portPart = text.slice(colon + 1);
      if (hostPart.includes(':')) throw new HostNameError('IPv6 literal must be bracketed');
    } else {
      hostPart = text;
    }
  }
  let port: number;
  if (portPart === undefined) {
    if (defaultPort === undefined) throw new HostNameError('port required');
    port = defaultPort;
  } else {
    port = parsePort(portPart);
  }
  const c = canonicalHost(hostPart);
  return { host: c.host, kind: c.kind, port };
}

/** `host:port` with IPv6 bracketed, for messages and Host comparisons. */
export function formatAuthority(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}
