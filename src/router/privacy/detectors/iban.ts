/** IBANs: a country's length and the ISO 13616 check digits. */
import { isDigit, isUpper, isAlnum, isWordish, type Span } from './chars.js';

/** Lengths of the IBAN of each country (ISO 13616 registry). */
const IBAN_LENGTHS: Record<string, number> = {
  AD: 24,
  AE: 23,
  AL: 28,
  AT: 20,
  AZ: 28,
  BA: 20,
  BE: 16,
  BG: 22,
  BH: 22,
  BR: 29,
  BY: 28,
  CH: 21,
  CR: 22,
  CY: 28,
  CZ: 24,
  DE: 22,
  DK: 18,
  DO: 28,
  EE: 20,
  EG: 29,
  ES: 24,
  FI: 18,
  FO: 18,
  FR: 27,
  GB: 22,
  GE: 22,
  GI: 23,
  GL: 18,
  GR: 27,
  GT: 28,
  HR: 21,
  HU: 28,
  IE: 22,
  IL: 23,
  IQ: 23,
  IS: 26,
  IT: 27,
  JO: 30,
  KW: 30,
  KZ: 20,
  LB: 28,
  LC: 32,
  LI: 21,
  LT: 20,
  LU: 20,
  LV: 21,
  MC: 27,
  MD: 24,
  ME: 22,
  MK: 19,
  MR: 27,
  MT: 31,
  MU: 30,
  NL: 18,
  NO: 15,
  PK: 24,
  PL: 28,
  PS: 29,
  PT: 25,
  QA: 29,
  RO: 24,
  RS: 22,
  SA: 24,
  SC: 31,
  SE: 24,
  SI: 19,
  SK: 24,
  SM: 27,
  ST: 25,
  SV: 28,
  TL: 23,
  TN: 24,
  TR: 26,
  UA: 29,
  VA: 22,
  VG: 24,
  XK: 20,
};

/** ISO 7064 mod 97-10 over the rearranged IBAN, computed in pieces (no big integers). */
export function ibanValid(iban: string): boolean {
  const moved = iban.slice(4) + iban.slice(0, 4);
  let rem = 0;
  for (let i = 0; i < moved.length; i++) {
    const c = moved.charCodeAt(i);
    const v = isDigit(c) ? c - 48 : c - 55; // A=10 … Z=35
    rem = v >= 10 ? (rem * 100 + v) % 97 : (rem * 10 + v) % 97;
  }
  return rem === 1;
}

/** Where an IBAN may start: two capitals and two digits. */
const IBAN_START = /[A-Z]{2}[0-9]{2}/g;

/** CC, two check digits, then the country's length of letters and digits (spaces every 4 allowed). */
export function iban(text: string, out: Span[]): void {
  const n = text.length;
  IBAN_START.lastIndex = 0;
  for (;;) {
    const m = IBAN_START.exec(text);
    if (m === null) return;
    const i = m.index;
    IBAN_START.lastIndex = i + 1;
    if (i > 0 && isWordish(text.charCodeAt(i - 1))) continue;
    const want = IBAN_LENGTHS[text.slice(i, i + 2)];
    if (want === undefined) continue;
    let compact = '';
    let j = i;
    while (j < n && compact.length < want) {
      const c = text.charCodeAt(j);
      if (isDigit(c) || isUpper(c)) {
        compact += text[j];
        j++;
      } else if (c === 32 && compact.length % 4 === 0 && j + 1 < n && isAlnum(text.charCodeAt(j + 1))) {
        j++;
      } else break;
    }
    if (compact.length !== want) continue;
    if (j < n && isWordish(text.charCodeAt(j))) continue;
    if (ibanValid(compact)) {
      out.push({ start: i, end: j });
      IBAN_START.lastIndex = j;
    }
  }
}
