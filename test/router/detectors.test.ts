/**
 * The built-in privacy detectors: what each finds (true positives, in the forms people write
 * them) and what it must leave alone (look-alikes: order numbers, versions, timestamps, hashes).
 * Pattern detectors, not understanding: these tests pin down the shapes, and docs/router.md says
 * what the shapes miss.
 */
import { describe, expect, it } from 'vitest';
import { compileLinearPattern, type BuiltinDetector } from '../../src/policy/index.js';
import { detect, ibanValid, luhn } from '../../src/router/privacy/detectors.js';

const found = (d: BuiltinDetector, text: string): string[] =>
  detect(d, text).map((s) => text.slice(s.start, s.end));

const CASES: Record<BuiltinDetector, { yes: [string, string][]; no: string[] }> = {
  email: {
    yes: [
      ['write to jane.doe+tag@example.co.uk today', 'jane.doe+tag@example.co.uk'],
      ['<bob@mail.example.com>', 'bob@mail.example.com'],
      ['a@b.io, c_d@e-f.org.', 'a@b.io'],
    ],
    no: [
      '@mention on slack',
      'user@localhost',
      'decorator @app.route("/")',
      'git@github',
      'a@b.c',
      'x@@y.com',
    ],
  },
  phone: {
    yes: [
      ['call +1 415 555 0132 now', '+1 415 555 0132'],
      ['+44 20 7946 0958', '+44 20 7946 0958'],
      ['(212) 555-0100', '(212) 555-0100'],
      ['tel 212-555-0100.', '212-555-0100'],
      ['+491701234567', '+491701234567'],
    ],
    no: [
      'order 2125550100',
      '2024-05-01',
      'version 1.2.3',
      'id 123-45-6789',
      '+12',
      '012-555-0100',
      '10.0.0.1',
    ],
  },
  payment_card: {
    yes: [
      ['card 4111 1111 1111 1111 exp 12/29', '4111 1111 1111 1111'],
      ['4111-1111-1111-1111', '4111-1111-1111-1111'],
      ['amex 378282246310005', '378282246310005'],
      ['mc 5555555555554444', '5555555555554444'],
      ['discover 6011111111111117', '6011111111111117'],
    ],
    no: [
      '4111 1111 1111 1112', // fails Luhn
      'order 1234567812345678', // no issuer
      '4111.1111.1111.1111', // dots: not how cards are written
      'ts 1700000000000000',
      'sha 4111111111111111abc',
      '0000000000000000',
    ],
  },
  iban: {
    yes: [
      ['pay to DE89 3704 0044 0532 0130 00 please', 'DE89 3704 0044 0532 0130 00'],
      ['GB82WEST12345698765432', 'GB82WEST12345698765432'],
      ['iban: FR1420041010050500013M02606.', 'FR1420041010050500013M02606'],
    ],
    no: [
      'DE89 3704 0044 0532 0130 01',
      'GB82WEST1234569876543',
      'XX82WEST12345698765432',
      'ADE89370400440532013000',
    ],
  },
  us_ssn: {
    yes: [
      ['SSN 078-05-1120.', '078-05-1120'],
      ['ssn: 123 45 6789', '123 45 6789'],
    ],
    no: [
      '000-12-3456',
      '666-12-3456',
      '900-12-3456',
      '123-00-4567',
      '123-45-0000',
      '123456789',
      'call 123-456-7890',
      '123-45-67890',
    ],
  },
  uk_nino: {
    yes: [
      ['NI number AB123456C', 'AB123456C'],
      ['AB 12 34 56 C', 'AB 12 34 56 C'],
    ],
    no: ['QQ123456C', 'GB123456A', 'AB123456E', 'XAB123456C', 'AB12345C'],
  },
  ip_address: {
    yes: [
      ['host 192.168.1.20 answered', '192.168.1.20'],
      ['from 8.8.8.8:53', '8.8.8.8'],
      ['v6 2001:db8::1 is down', '2001:db8::1'],
      ['fe80::1ff:fe23:4567:890a', 'fe80::1ff:fe23:4567:890a'],
    ],
    no: [
      'version 1.2.3',
      'at 12:30:45',
      '256.1.1.1',
      '1.2.3.4.5',
      'std::vector',
      'a::b',
      'v1.2.3.4',
      '01.02.03.04',
    ],
  },
  api_key: {
    yes: [
      ['key sk-proj-abcdefghijklmnopqrstuvwxyz0123456789', 'sk-proj-abcdefghijklmnopqrstuvwxyz0123456789'],
      ['token ghp_abcdefghijklmnopqrstuvwxyz0123456789', 'ghp_abcdefghijklmnopqrstuvwxyz0123456789'],
      ['AKIAIOSFODNN7EXAMPLE', 'AKIAIOSFODNN7EXAMPLE'],
      ['xoxb-123456789012-abcdefghijkl', 'xoxb-123456789012-abcdefghijkl'],
      [
        'nvapi-abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGH',
        'nvapi-abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGH',
      ],
    ],
    no: ['sk-short', 'task-force-alpha', 'ghp_tooshort', 'mask-abcdefghijklmnopqrstuvwxyz', 'AKIA1234'],
  },
  private_key: {
    yes: [
      [
        'x -----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY----- y',
        '-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----',
      ],
      ['-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn', '-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn'],
    ],
    no: ['-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----', '-----BEGIN PUBLIC KEY-----'],
  },
  jwt: {
    yes: [
      [
        'auth eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U ok',
        'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U',
      ],
    ],
    no: [
      'eyJhbGciOiJIUzI1NiJ9 alone',
      'eyJ.eyJ.x',
      'abceyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.sig',
    ],
  },
};

describe('built-in detectors', () => {
  for (const [detector, c] of Object.entries(CASES) as [BuiltinDetector, (typeof CASES)[BuiltinDetector]][]) {
    describe(detector, () => {
      for (const [text, expected] of c.yes)
        it(`finds ${JSON.stringify(expected)}`, () => expect(found(detector, text)).toContain(expected));
      for (const text of c.no)
        it(`leaves ${JSON.stringify(text)} alone`, () => expect(found(detector, text)).toEqual([]));
    });
  }

  it('checks Luhn and IBAN mod-97 correctly', () => {
    expect(luhn('4111111111111111')).toBe(true);
    expect(luhn('4111111111111112')).toBe(false);
    expect(ibanValid('DE89370400440532013000')).toBe(true);
    expect(ibanValid('DE89370400440532013001')).toBe(false);
  });

  it('stays linear on hostile input (long runs that almost match)', () => {
    // Each would be quadratic or worse for a naive backtracking pattern; here each scan is one pass.
    const hostile = [
      'a'.repeat(200_000) + '@',
      '1 '.repeat(100_000),
      '4'.repeat(200_000),
      'eyJ'.repeat(60_000),
      ':'.repeat(200_000),
      'DE89'.repeat(50_000),
      '-----BEGIN '.repeat(20_000),
    ];
    for (const text of hostile)
      for (const d of Object.keys(CASES) as BuiltinDetector[]) expect(() => detect(d, text)).not.toThrow();
  });

  it('finds no token in a prompt of back-to-back JWT headers (the scan read each run again: quadratic)', () => {
    // 6 MB, within the router's 32 MiB request limit: ~10^13 steps read quadratically (the test
    // never ends), one pass read linearly.
    const text = 'eyJ'.repeat(2_000_000);
    expect(detect('jwt', text)).toEqual([]);
    expect(detect('jwt', `${text} eyJhbGciOiJI.eyJzdWIiOiIx.c2ln`)).toEqual([
      { start: text.length + 1, end: text.length + 31 },
    ]);
  });
});

describe('custom patterns (linear-time engine)', () => {
  it('matches, with a literal prefix found by indexOf and without one', () => {
    const p = compileLinearPattern('PROJ-[0-9]{4}');
    if ('error' in p) throw new Error(p.error);
    expect(p.spans('a PROJ-1234 b PROJ-99 c PROJ-5678').length).toBe(2);
    const q = compileLinearPattern('[A-Z]{3}-[0-9]{4}');
    if ('error' in q) throw new Error(q.error);
    expect(q.spans('x ABC-1234 y').map((s) => [s.start, s.end])).toEqual([[2, 10]]);
  });

  it('refuses backreferences, lookarounds and empty matches with a reason', () => {
    expect(compileLinearPattern('(a)\\1')).toMatchObject({ error: expect.stringContaining('linear time') });
    expect(compileLinearPattern('a(?=b)')).toMatchObject({ error: expect.stringContaining('linear time') });
    expect(compileLinearPattern('x*')).toMatchObject({ error: expect.stringContaining('empty') });
  });

  it('runs a pattern that is catastrophic for a backtracking engine in linear time', () => {
    const p = compileLinearPattern('(a+)+b');
    if ('error' in p) throw new Error(p.error);
    // A backtracking engine needs ~2^n steps for n = 5,000 (never finishes); this returns.
    expect(p.spans('a'.repeat(5_000))).toEqual([]);
  });
});
