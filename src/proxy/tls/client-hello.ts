/**
 * Reads the server name (SNI) from a TLS ClientHello without terminating TLS, for raw CONNECT tunnels.
 *
 * Threat: domain fronting — CONNECT to an allowed host (a CDN front) and then ask, inside TLS, for
 * another site served by the same front. The proxy compares the SNI with the CONNECT host before a
 * byte reaches the upstream. The parser is total over arbitrary bytes (returns `incomplete`, `done`
 * or `error`), reassembles a ClientHello split over several handshake records, and stops at 32 KiB.
 * Encrypted ClientHello (ECH) carries a cover name in the outer SNI; it then differs from the CONNECT
 * host and the tunnel is refused, which is the intended outcome (we cannot see the real name).
 */

export const MAX_CLIENT_HELLO = 32 * 1024;

export type HelloParse =
  { status: 'incomplete' } | { status: 'done'; sni: string | null } | { status: 'error'; reason: string };

/** True when the first byte says a TLS handshake record follows. */
export function looksLikeTls(first: number): boolean {
  return first === 0x16;
}

export function parseClientHello(buf: Buffer): HelloParse {
  // Reassemble handshake bytes from consecutive handshake records.
  const parts: Buffer[] = [];
  let have = 0;
  let off = 0;
  let need = -1;
  while (off + 5 <= buf.length) {
    if (buf[off] !== 0x16) return { status: 'error', reason: 'TLS record is not a handshake' };
    if (buf[off + 1] !== 0x03) return { status: 'error', reason: 'unsupported TLS record version' };
    const len = buf.readUInt16BE(off + 3);
    if (len === 0 || len > 16384 + 2048) return { status: 'error', reason: 'invalid TLS record length' };
    if (off + 5 + len > buf.length) {
      parts.push(buf.subarray(off + 5));
      have += buf.length - off - 5;
      off = buf.length;
      break;
    }
    parts.push(buf.subarray(off + 5, off + 5 + len));
    have += len;
    off += 5 + len;
    if (need < 0 && have >= 4) {
      const hs = Buffer.concat(parts);
      if (hs[0] !== 0x01) return { status: 'error', reason: 'first handshake message is not a ClientHello' };
      need = 4 + hs.readUIntBE(1, 3);
      if (need > MAX_CLIENT_HELLO) return { status: 'error', reason: 'ClientHello too large' };
    }
    if (need >= 0 && have >= need) return parseHelloBody(Buffer.concat(parts).subarray(4, need));
  }
  if (buf.length >= MAX_CLIENT_HELLO + 5 * 4) return { status: 'error', reason: 'ClientHello too large' };
  return { status: 'incomplete' };
}

class Cursor {
  constructor(
    private readonly b: Buffer,
    public pos = 0,
  ) {}
  need(n: number): boolean {
    return this.pos + n <= this.b.length;
  }
  u8(): number {
    return this.b[this.pos++] as number;
  }
  u16(): number {
    const v = this.b.readUInt16BE(this.pos);
    this.pos += 2;
    return v;
  }
  take(n: number): Buffer {
    const v = this.b.subarray(this.pos, this.pos + n);
    this.pos += n;
    return v;
  }
}

function parseHelloBody(body: Buffer): HelloParse {
  const bad = (reason: string): HelloParse => ({ status: 'error', reason });
  const c = new Cursor(body);
  if (!c.need(2 + 32 + 1)) return bad('truncated ClientHello');
  c.take(2 + 32);
  const sid = c.u8();
  if (sid > 32 || !c.need(sid + 2)) return bad('invalid session id');
  c.take(sid);
  const suites = c.u16();
  if (suites === 0 || suites % 2 !== 0 || !c.need(suites + 1)) return bad('invalid cipher suites');
  c.take(suites);
  const comp = c.u8();
  if (comp === 0 || !c.need(comp)) return bad('invalid compression methods');
  c.take(comp);
  if (!c.need(2)) return { status: 'done', sni: null }; // no extensions at all
  const extLen = c.u16();
  if (!c.need(extLen)) return bad('truncated extensions');
  const ext = new Cursor(c.take(extLen));
  let sni: string | null = null;
  let seen = false;
  while (ext.need(4)) {
    const type = ext.u16();
    const len = ext.u16();
    if (!ext.need(len)) return bad('truncated extension');
    const data = new Cursor(ext.take(len));
    if (type !== 0) continue;
    if (seen) return bad('duplicate server_name extension');
    seen = true;
    if (!data.need(2)) return bad('invalid server_name extension');
    const listLen = data.u16();
    if (!data.need(listLen) || listLen < 3) return bad('invalid server_name list');
    const nameType = data.u8();
    const nameLen = data.u16();
    if (nameType !== 0 || !data.need(nameLen) || nameLen === 0 || 3 + nameLen !== listLen) {
      return bad('invalid server_name entry');
    }
    const name = data.take(nameLen).toString('latin1');
    if (/[^\x21-\x7e]/.test(name)) return bad('invalid characters in server_name');
    sni = name;
  }
  if (ext.pos !== extLen) return bad('trailing bytes in extensions');
  return { status: 'done', sni };
}
