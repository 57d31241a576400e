/** The strict request-head parser: what it accepts, what it refuses, and that it is total. */
import { describe, expect, it } from 'vitest';
import {
  HttpHeadError,
  MAX_CONNECT_HEAD_BYTES,
  MAX_HEAD_BYTES,
  parseRequestHead,
  tryParseRequestHead,
} from '../../src/proxy/http/http-head.js';
import { findHeadEnd } from '../../src/proxy/http/http-fields.js';
import { parseResponseHead } from '../../src/proxy/http/http-response.js';

const b = (s: string): Buffer => Buffer.from(s, 'latin1');
const parse = (s: string, ctx: 'proxy' | 'tunnel' = 'proxy') => parseRequestHead(b(s), ctx);
function reason(s: string, ctx: 'proxy' | 'tunnel' = 'proxy'): string {
  try {
    parse(s, ctx);
  } catch (e) {
    if (e instanceof HttpHeadError) return e.reason;
    throw e;
  }
  return 'accepted';
}

describe('parseRequestHead accepts', () => {
  it('CONNECT in authority-form', () => {
    const h = parse('CONNECT api.github.com:443 HTTP/1.1\r\nHost: api.github.com:443\r\n\r\n');
    expect(h).toMatchObject({
      method: 'CONNECT',
      target: 'api.github.com:443',
      targetForm: 'authority',
      version: '1.1',
      body: { kind: 'none' },
    });
  });
  it('absolute-form with Content-Length, keeping header case and order', () => {
    const h = parse(
      'POST http://a.test/x?y=1 HTTP/1.1\r\nHost: a.test\r\nX-Thing:  v  \r\nContent-Length: 3\r\n\r\n',
    );
    expect(h.targetForm).toBe('absolute');
    expect(h.body).toEqual({ kind: 'length', length: 3 });
    expect(h.headers.map((x) => [x.name, x.value])).toEqual([
      ['Host', 'a.test'],
      ['X-Thing', 'v'],
      ['Content-Length', '3'],
    ]);
  });
  it('origin-form inside a tunnel, chunked, identical duplicate Content-Length', () => {
    expect(parse('POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n', 'tunnel').body).toEqual(
      { kind: 'chunked' },
    );
    expect(
      parse('POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n', 'tunnel').body,
    ).toEqual({ kind: 'length', length: 5 });
  });
  it('HTTP/1.0 without Host, closing by default', () => {
    const h = parse('GET http://a.test/ HTTP/1.0\r\n\r\n');
    expect(h).toMatchObject({ host: null, close: true });
    expect(parse('GET http://a.test/ HTTP/1.0\r\nConnection: keep-alive\r\n\r\n').close).toBe(false);
  });
  it('Upgrade only with Connection: upgrade', () => {
    expect(
      parse('GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: WebSocket\r\n\r\n', 'tunnel')
        .upgrade,
    ).toEqual(['websocket']);
    expect(parse('GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n', 'tunnel').upgrade).toEqual([]);
  });
});

describe('parseRequestHead refuses', () => {
  const cases: [string, string, RegExp][] = [
    ['obs-fold', 'GET http://a/ HTTP/1.1\r\nHost: a\r\nX: 1\r\n\t2\r\n\r\n', /obs-fold/],
    [
      'CL with TE',
      'POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n',
      /both Content-Length and Transfer-Encoding/,
    ],
    [
      'differing CL',
      'POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n',
      /differing/,
    ],
    ['CL list differing', 'POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 2\r\n\r\n', /differing/],
    [
      'signed CL',
      'POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n',
      /invalid Content-Length/,
    ],
    // A no-break space (0xA0, obs-text) is not whitespace to HTTP: String.trim would have read 5.
    [
      'CL with a no-break space',
      'POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 5\xa0\r\n\r\n',
      /invalid Content-Length/,
    ],
    [
      'CL list with a no-break space',
      'POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 5,\xa05\r\n\r\n',
      /invalid Content-Length/,
    ],
    [
      'TE chunked with a no-break space',
      'POST http://a/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\xa0\r\n\r\n',
      /Transfer-Encoding/,
    ],
    ['several Host', 'GET http://a/ HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n', /several Host/],
    ['no Host on 1.1', 'GET http://a/ HTTP/1.1\r\n\r\n', /missing Host/],
    ['NUL in value', 'GET http://a/ HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n', /control character/],
    ['bare CR in value', 'GET http://a/ HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n', /bare CR/],
    ['bare LF line end', 'GET http://a/ HTTP/1.1\nHost: a\r\n\r\n', /bare/],
    ['bad method token', 'G(T http://a/ HTTP/1.1\r\nHost: a\r\n\r\n', /invalid method/],
    ['bad header name', 'GET http://a/ HTTP/1.1\r\nHost: a\r\nX Y: 1\r\n\r\n', /field name/],
    ['space before colon', 'GET http://a/ HTTP/1.1\r\nHost : a\r\n\r\n', /field name/],
    ['HTTP/2', 'GET http://a/ HTTP/2.0\r\nHost: a\r\n\r\n', /unsupported HTTP version/],
    ['garbage version', 'GET http://a/ HTTX/1.1\r\nHost: a\r\n\r\n', /malformed HTTP version/],
    [
      'TE not final chunked',
      'POST http://a/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n',
      /does not end in chunked/,
    ],
    [
      'TE gzip, chunked',
      'POST http://a/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n',
      /only "chunked"/,
    ],
    ['TE on 1.0', 'POST http://a/ HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n', /HTTP\/1\.0/],
    [
      'CONNECT with body',
      'CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\nContent-Length: 5\r\n\r\n',
      /CONNECT with a body/,
    ],
    ['CONNECT with a path', 'CONNECT a:443/x HTTP/1.1\r\nHost: a\r\n\r\n', /host:port/],
    ['origin-form to the proxy', 'GET /x HTTP/1.1\r\nHost: a\r\n\r\n', /absolute-form/],
    ['double space', 'GET  http://a/ HTTP/1.1\r\nHost: a\r\n\r\n', /malformed request line/],
    [
      'non-ASCII target',
      'GET http://a/\xe9 HTTP/1.1\r\nHost: a\r\n\r\n',
      /invalid character in request target/,
    ],
    ['empty Host', 'GET http://a/ HTTP/1.1\r\nHost: \r\n\r\n', /invalid Host/],
  ];
  for (const [name, text, want] of cases) {
    it(name, () => expect(reason(text)).toMatch(want));
  }
  it('CONNECT inside a tunnel', () =>
    expect(reason('CONNECT a:1 HTTP/1.1\r\nHost: a\r\n\r\n', 'tunnel')).toMatch(/inside a tunnel/));

  it('heads over 16 KiB (431) and CONNECT heads over 8 KiB', () => {
    const big = `GET http://a/ HTTP/1.1\r\nHost: a\r\nX: ${'a'.repeat(MAX_HEAD_BYTES)}\r\n\r\n`;
    expect(() => findHeadEnd(b(big), MAX_HEAD_BYTES)).toThrow(HttpHeadError);
    try {
      findHeadEnd(b(big), MAX_HEAD_BYTES);
    } catch (e) {
      expect((e as HttpHeadError).status).toBe(431);
    }
    const connect = `CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\nX: ${'a'.repeat(MAX_CONNECT_HEAD_BYTES)}\r\n\r\n`;
    expect(reason(connect)).toMatch(/CONNECT head too large/);
    const okGet = `GET http://a/ HTTP/1.1\r\nHost: a\r\nX: ${'a'.repeat(MAX_CONNECT_HEAD_BYTES)}\r\n\r\n`;
    expect(reason(okGet)).toBe('accepted');
  });
});

describe('parseResponseHead', () => {
  it('frames responses by method and status', () => {
    expect(parseResponseHead(b('HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n'), 'GET').body).toEqual({
      kind: 'length',
      length: 3,
    });
    expect(parseResponseHead(b('HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n'), 'HEAD').body).toEqual({
      kind: 'none',
    });
    expect(parseResponseHead(b('HTTP/1.1 204 No Content\r\n\r\n'), 'GET').body).toEqual({ kind: 'none' });
    expect(parseResponseHead(b('HTTP/1.1 200 OK\r\n\r\n'), 'GET')).toMatchObject({
      body: { kind: 'close' },
      close: true,
    });
    const both = parseResponseHead(
      b('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n'),
      'GET',
    );
    expect(both).toMatchObject({ body: { kind: 'chunked' }, close: true });
    expect(() => parseResponseHead(b('HTTP/1.1 20 OK\r\n\r\n'), 'GET')).toThrow(HttpHeadError);
  });
});

/** A small deterministic PRNG (mulberry32) so a failing input can be reproduced from the seed. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('totality (bounded fuzz, fixed seed)', () => {
  const seeds = [
    'CONNECT api.github.com:443 HTTP/1.1\r\nHost: api.github.com:443\r\n\r\n',
    'POST http://a.test/x?y=1 HTTP/1.1\r\nHost: a.test\r\nContent-Length: 3\r\n\r\n',
    'POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n',
  ];
  const alphabet = [
    '\r',
    '\n',
    '\r\n',
    ' ',
    '\t',
    ':',
    ',',
    '\0',
    '\x7f',
    '\xff',
    'a',
    '0',
    'Content-Length',
    'Transfer-Encoding',
    'chunked',
    'Host',
    'HTTP/1.1',
    '%',
    '/',
    '..',
  ];

  // A hang (catastrophic backtracking, a loop on some input) fails on the test's timeout.
  it('10,000 mutated heads: each is accepted or refused with HttpHeadError', () => {
    const rand = rng(0xc0ffee);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)] as T;
    let accepted = 0;
    for (let i = 0; i < 10_000; i++) {
      let s = pick(seeds);
      const edits = 1 + Math.floor(rand() * 4);
      for (let e = 0; e < edits; e++) {
        const at = Math.floor(rand() * (s.length + 1));
        const op = rand();
        if (op < 0.4) s = s.slice(0, at) + pick(alphabet) + s.slice(at);
        else if (op < 0.7) s = s.slice(0, at) + s.slice(at + 1 + Math.floor(rand() * 8));
        else if (op < 0.85)
          s = s.slice(0, at) + String.fromCharCode(Math.floor(rand() * 256)) + s.slice(at + 1);
        else s = s.slice(0, at) + s.slice(at, at + 12).repeat(1 + Math.floor(rand() * 3)) + s.slice(at);
      }
      const buf = b(s);
      try {
        const h = tryParseRequestHead(buf, rand() < 0.5 ? 'proxy' : 'tunnel');
        if (h) {
          accepted++;
          // Anything accepted is unambiguous: never both framings, one Host at most.
          expect(h.headers.filter((x) => x.lname === 'host').length).toBeLessThanOrEqual(1);
          const te = h.headers.some((x) => x.lname === 'transfer-encoding');
          const cl = h.headers.some((x) => x.lname === 'content-length');
          expect(te && cl).toBe(false);
          for (const x of h.headers) expect(/[\0\r\n]/.test(x.value)).toBe(false);
        }
      } catch (e) {
        if (!(e instanceof HttpHeadError))
          throw new Error(`input #${i} threw ${String(e)}: ${JSON.stringify(s)}`);
      }
    }
    expect(accepted).toBeGreaterThan(100);
  }, 60_000);
});

describe('Content-Length and the field count (the one-field fast path reads as the general rule)', () => {
  const cl = (...values: string[]): number | string => {
    const head = `HTTP/1.1 200 OK\r\n${values.map((v) => `Content-Length: ${v}\r\n`).join('')}\r\n`;
    try {
      const body = parseResponseHead(b(head), 'GET').body;
      return body.kind === 'length' ? body.length : body.kind;
    } catch (e) {
      if (e instanceof HttpHeadError) return e.reason;
      throw e;
    }
  };
  it('reads one field of digits, leading zeros included, up to 15 digits', () => {
    expect(cl('11')).toBe(11);
    expect(cl('007')).toBe(7);
    expect(cl('0')).toBe('none');
    expect(cl('999999999999999')).toBe(999999999999999);
  });
  it('refuses what the general rule refuses, and reads its lists and duplicates', () => {
    expect(cl('1234567890123456')).toBe('invalid Content-Length');
    expect(cl('+1')).toBe('invalid Content-Length');
    expect(cl('0x10')).toBe('invalid Content-Length');
    expect(cl('1 1')).toBe('invalid Content-Length');
    expect(cl('')).toBe('invalid Content-Length');
    expect(cl('3, 3')).toBe(3);
    expect(cl('3, 4')).toBe('differing Content-Length values');
    expect(cl('05', '5')).toBe(5);
    expect(cl('5', '6')).toBe('differing Content-Length values');
  });
  it('counts the header fields after the start line against the limit', () => {
    const fields = (n: number): string =>
      `GET http://a/ HTTP/1.1\r\nHost: a\r\n${'X: 1\r\n'.repeat(n - 1)}\r\n`;
    expect(reason(fields(128))).toBe('accepted');
    expect(reason(fields(129))).toBe('too many header fields');
  });
});
