/**
 * The relay's one-line header that starts every connection on a sandbox's Unix socket: PROXY
 * protocol v1, `PROXY TCP4 <src> <dst> <src-port> <dst-port>`, and one field of ours, the inode of
 * the client's socket as the relay found it with sock_diag (0: unknown), then CRLF. The field is
 * optional here: without it the caller lookup finds the socket in the sandbox's TCP table.
 *
 * Threat: the agent cannot reach the Unix socket (only the relay holds it), so the header is trusted
 * for the source port — but a malformed header still means something is wrong (a bug in the relay, or
 * a process that got hold of the socket), so anything but the exact grammar closes the connection
 * and is reported as a finding. `UNKNOWN` is refused: without a source port there is no caller.
 */
import { parseIpv4, parseIpv6 } from '../net/ip.js';

/** v1's 107 bytes, and room for the inode (the relay's buffer is 128 bytes). */
export const MAX_PROXY_LINE = 128;

export interface ProxyHeader {
  family: 4 | 6;
  srcAddress: string;
  dstAddress: string;
  srcPort: number;
  dstPort: number;
  /** Inode of the client's socket; null when the relay did not know it. */
  socketInode: number | null;
}

export class ProxyHeaderError extends Error {
  constructor(readonly reason: string) {
    super(reason);
    this.name = 'ProxyHeaderError';
  }
}

const PORT = /^(0|[1-9][0-9]{0,4})$/;
const INODE = /^(0|[1-9][0-9]{0,19})$/;

function inode(text: string | undefined): number | null {
  if (text === undefined) return null;
  if (!INODE.test(text)) throw new ProxyHeaderError('invalid socket inode in relay header');
  const n = Number(text);
  if (!Number.isSafeInteger(n)) throw new ProxyHeaderError('socket inode out of range in relay header');
  return n === 0 ? null : n;
}

function port(text: string): number {
  if (!PORT.test(text)) throw new ProxyHeaderError('invalid port in relay header');
  const n = Number(text);
  if (n > 65535) throw new ProxyHeaderError('port out of range in relay header');
  return n;
}

/**
 * Index just past the header's CRLF in `buf`, -1 if incomplete; throws when the bytes cannot be a
 * header (wrong start, no CRLF within MAX_PROXY_LINE bytes).
 */
export function findProxyHeaderEnd(buf: Buffer): number {
  const prefix = 'PROXY ';
  for (let i = 0; i < Math.min(buf.length, prefix.length); i++) {
    if (buf[i] !== prefix.charCodeAt(i))
      throw new ProxyHeaderError('connection does not start with a relay header');
  }
  const lf = buf.indexOf(0x0a);
  if (lf < 0 || lf >= MAX_PROXY_LINE) {
    if (buf.length >= MAX_PROXY_LINE) throw new ProxyHeaderError('relay header too long');
    return -1;
  }
  return lf + 1;
}

export function parseProxyHeader(line: Buffer): ProxyHeader {
  const text = line.toString('latin1');
  if (!text.endsWith('\r\n')) throw new ProxyHeaderError('relay header not terminated by CRLF');
  const parts = text.slice(0, -2).split(' ');
  if ((parts.length !== 6 && parts.length !== 7) || parts[0] !== 'PROXY')
    throw new ProxyHeaderError('malformed relay header');
  const [, proto, src, dst, sport, dport, ino] = parts as [
    string,
    string,
    string,
    string,
    string,
    string,
    string?,
  ];
  let family: 4 | 6;
  if (proto === 'TCP4') {
    if (!parseIpv4(src) || !parseIpv4(dst))
      throw new ProxyHeaderError('invalid IPv4 address in relay header');
    family = 4;
  } else if (proto === 'TCP6') {
    if (!parseIpv6(src) || !parseIpv6(dst))
      throw new ProxyHeaderError('invalid IPv6 address in relay header');
    family = 6;
  } else {
    throw new ProxyHeaderError('unsupported protocol in relay header');
  }
  return {
    family,
    srcAddress: src,
    dstAddress: dst,
    srcPort: port(sport),
    dstPort: port(dport),
    socketInode: inode(ino),
  };
}
