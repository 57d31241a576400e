/** SNI extraction from real ClientHellos, reassembled across records; total over garbage. */
import net from 'node:net';
import tls from 'node:tls';
import { describe, expect, it } from 'vitest';
import { parseClientHello } from '../../src/proxy/tls/client-hello.js';

/** The first bytes a real Node TLS client sends, captured by a plain TCP server. */
async function captureHello(servername: string | undefined): Promise<Buffer> {
  let resolveBytes: (b: Buffer) => void = () => undefined;
  const got = new Promise<Buffer>((r) => (resolveBytes = r));
  const server = net.createServer((s) => {
    let buf = Buffer.alloc(0);
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length >= 5 && buf.length >= 5 + buf.readUInt16BE(3)) {
        resolveBytes(buf);
        s.destroy();
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  const c = tls.connect({ host: '127.0.0.1', port, ...(servername === undefined ? {} : { servername }) });
  c.on('error', () => undefined);
  const bytes = await got;
  c.destroy();
  server.close();
  return bytes;
}

describe('parseClientHello', () => {
  it('reads the SNI of a real ClientHello', async () => {
    const hello = await captureHello('api.example.test');
    expect(parseClientHello(hello)).toEqual({ status: 'done', sni: 'api.example.test' });
    expect(parseClientHello(hello.subarray(0, 40))).toEqual({ status: 'incomplete' });
  });

  it('reports no SNI when the client sends none', async () => {
    const hello = await captureHello('');
    expect(parseClientHello(hello)).toEqual({ status: 'done', sni: null });
  });

  it('reassembles a ClientHello split across two handshake records', async () => {
    const hello = await captureHello('split.example.test');
    const body = hello.subarray(5);
    const cut = 30;
    const rec = (part: Buffer) =>
      Buffer.concat([Buffer.from([0x16, 0x03, 0x01, part.length >> 8, part.length & 0xff]), part]);
    const twoRecords = Buffer.concat([rec(body.subarray(0, cut)), rec(body.subarray(cut))]);
    expect(parseClientHello(twoRecords)).toEqual({ status: 'done', sni: 'split.example.test' });
    expect(parseClientHello(twoRecords.subarray(0, 5 + cut + 3))).toEqual({ status: 'incomplete' });
  });

  it('refuses what is not a ClientHello', () => {
    expect(parseClientHello(Buffer.from('GET / HTTP/1.1\r\n\r\n'))).toMatchObject({ status: 'error' });
    expect(
      parseClientHello(Buffer.from([0x16, 0x03, 0x01, 0x00, 0x04, 0x02, 0x00, 0x00, 0x00])),
    ).toMatchObject({ status: 'error' });
  });

  it('is total over 5,000 mutations of a real hello (fixed seed)', async () => {
    const hello = await captureHello('fuzz.example.test');
    let seed = 12345;
    const rand = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
    for (let i = 0; i < 5000; i++) {
      const m = Buffer.from(hello);
      const edits = 1 + Math.floor(rand() * 6);
      for (let e = 0; e < edits; e++) m[Math.floor(rand() * m.length)] = Math.floor(rand() * 256);
      const cut = m.subarray(0, Math.floor(rand() * (m.length + 1)));
      const r = parseClientHello(cut);
      expect(['incomplete', 'done', 'error']).toContain(r.status);
    }
  });
});
