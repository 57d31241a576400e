/**
 * Built-in detectors of personal data and secrets in prompt text. They find *shapes*, not meaning:
 * an email address, a number that passes the Luhn check with a card issuer's prefix, an IBAN whose
 * check digits are right, a key with a known vendor prefix. What they cannot see (a name, an
 * address, a diagnosis, a secret without a known shape) passes; what merely looks like one (a
 * 16-digit order number that happens to pass Luhn) is caught. docs/router.md says so.
 *
 * Cost: every detector is a hand-written scan that looks at each character a bounded number of
 * times (no backtracking regular expression over the agent's text: a crafted prompt must not stall
 * the event loop that serves every sandbox). Prefilters (`indexOf('@')`, a digit) skip most text.
 */
import { isIPv6 } from 'node:net';
import type { BuiltinDetector } from '../../policy/index.js';

export interface Span {
  start: number;
  end: number;
}

type Detector = (text: string, out: Span[]) => void;

const isDigit = (c: number): boolean => c >= 48 && c <= 57;
const isUpper = (c: number): boolean => c >= 65 && c <= 90;
const isLower = (c: number): boolean => c >= 97 && c <= 122;
const isAlnum = (c: number): boolean => isDigit(c) || isUpper(c) || isLower(c);
const isHex = (c: number): boolean => isDigit(c) || (c >= 65 && c <= 70) || (c >= 97 && c <= 102);
const isBase64Url = (c: number): boolean => isAlnum(c) || c === 45 || c === 95;
const isWordish = (c: number): boolean => isAlnum(c) || c === 95;

// ---------------------------------------------------------------------------------------------- email

const isLocalChar = (c: number): boolean =>
  isAlnum(c) || c === 46 || c === 95 || c === 37 || c === 43 || c === 45 || c === 39;
const isDomainChar = (c: number): boolean => isAlnum(c) || c === 45 || c === 46;

/** local@domain.tld: local ≤ 64 characters, a dotted domain ≤ 253 with a letter TLD of 2+. */
function email(text: string, out: Span[]): void {
  let at = text.indexOf('@');
  let floor = 0; // never scan left past the end of the previous match
  while (at >= 0) {
    let s = at;
    while (s > floor && at - s < 64 && isLocalChar(text.charCodeAt(s - 1))) s--;
    while (s < at && text.charCodeAt(s) === 46) s++; // no leading dot
    let e = at + 1;
    while (e < text.length && e - at <= 253 && isDomainChar(text.charCodeAt(e))) e++;
    while (e > at + 1 && (text.charCodeAt(e - 1) === 46 || text.charCodeAt(e - 1) === 45)) e--;
    const domain = text.slice(at + 1, e);
    const dot = domain.lastIndexOf('.');
    const tld = dot >= 0 ? domain.slice(dot + 1) : '';
    if (s < at && dot > 0 && tld.length >= 2 && /^[A-Za-z]+$/.test(tld) && !domain.includes('..')) {
      out.push({ start: s, end: e });
      floor = e;
      at = text.indexOf('@', e);
    } else {
      at = text.indexOf('@', at + 1);
    }
  }
}

// ------------------------------------------------------------------------------------ digit groups

/**
 * A run of digits with single separators between groups (`4111 1111-1111 1111`, `078-05-1120`,
 * `+44 20 7946 0958`, `(212) 555-0100`): the candidate form every numeric detector reads.
 */
interface NumberRun {
  start: number;
  end: number;
  digits: string;
  /** The separators between groups, in order. */
  seps: string;
  /** Lengths of the digit groups. */
  groups: number[];
  plus: boolean;
  paren: boolean;
}

const DIGIT = /[0-9]/g;

/** Every number-shaped run of `text`, in order (computed once for all numeric detectors). */
function numberRuns(text: string): NumberRun[] {
  const out: NumberRun[] = [];
  const n = text.length;
  let i = 0;
  for (;;) {
    // The regular expression engine skips prose far faster than a loop over characters.
    DIGIT.lastIndex = i;
    const m = DIGIT.exec(text);
    if (m === null) break;
    i = m.index;
    // A digit glued to a letter or underscore on its left is part of a word (an id, a hash).
    if (i > 0 && (isWordish(text.charCodeAt(i - 1)) || text.charCodeAt(i - 1) === 46)) {
      while (i < n && isWordish(text.charCodeAt(i))) i++;
      continue;
    }
    let start = i;
    let plus = false;
    let paren = false;
    if (start > 0 && text.charCodeAt(start - 1) === 40) {
      paren = true;
      start--;
    }
    if (start > 0 && text.charCodeAt(start - 1) === 43) {
      plus = true;
      start--;
    }
    let digits = '';
    let seps = '';
    const groups: number[] = [];
    let j = i;
    for (;;) {
      const g0 = j;
      while (j < n && isDigit(text.charCodeAt(j))) j++;
      digits += text.slice(g0, j);
      groups.push(j - g0);
      if (digits.length > 34) break;
      // `(212) 555`: a closing parenthesis then a space separates the area code.
      let k = j;
      let sep = '';
      const c = text.charCodeAt(k);
      if (paren && groups.length === 1 && c === 41) {
        sep = ')';
        k++;
        if (text.charCodeAt(k) === 32) k++;
      } else if (c === 32 || c === 45 || c === 46) {
        sep = text[k] as string;
        k++;
      }
      if (sep !== '' && k < n && isDigit(text.charCodeAt(k))) {
        seps += sep;
        j = k;
        continue;
      }
      break;
    }
    // Glued to a letter on the right: a word, not a number.
    if (j < n && (isUpper(text.charCodeAt(j)) || isLower(text.charCodeAt(j)) || text.charCodeAt(j) === 95)) {
      while (j < n && isWordish(text.charCodeAt(j))) j++;
      i = j;
      continue;
    }
    out.push({ start, end: j, digits, seps, groups, plus, paren: paren && seps.startsWith(')') });
    i = j;
  }
  return out;
}

function luhn(digits: string): boolean {
  let sum = 0;
  let double = false;
  for (let i = digits.length - 1; i >= 0; i--) {
    let d = digits.charCodeAt(i) - 48;
    if (double) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
    double = !double;
  }
  return sum % 10 === 0;
}

/** Issuer prefixes (IIN ranges) of the card networks, with their lengths. */
function cardIssuer(d: string): boolean {
  const len = d.length;
  const p2 = Number(d.slice(0, 2));
  const p3 = Number(d.slice(0, 3));
  const p4 = Number(d.slice(0, 4));
  const p6 = Number(d.slice(0, 6));
  if (d[0] === '4') return len === 13 || len === 16 || len === 19; // Visa
  if ((p2 >= 51 && p2 <= 55) || (p4 >= 2221 && p4 <= 2720)) return len === 16; // Mastercard
  if (p2 === 34 || p2 === 37) return len === 15; // American Express
  if (p4 === 6011 || p2 === 65 || (p3 >= 644 && p3 <= 649) || (p6 >= 622126 && p6 <= 622925))
    return len >= 16 && len <= 19; // Discover
  if (p4 >= 3528 && p4 <= 3589) return len >= 16 && len <= 19; // JCB
  if ((p3 >= 300 && p3 <= 305) || p2 === 36 || p2 === 38 || p2 === 39) return len >= 14 && len <= 19; // Diners
  if (p2 === 62) return len >= 16 && len <= 19; // UnionPay
  if (p2 === 50 || (p2 >= 56 && p2 <= 69)) return len >= 12 && len <= 19; // Maestro
  return false;
}

/** 13–19 digits, ungrouped or in groups with one kind of separator, a known issuer, Luhn-valid. */
function paymentCard(r: NumberRun): boolean {
  if (r.plus || r.paren) return false;
  const d = r.digits;
  if (d.length < 12 || d.length > 19) return false;
  if (r.seps.length > 0 && (new Set(r.seps).size !== 1 || r.seps[0] === '.')) return false;
  if (r.groups.some((g) => g < 3) && r.seps.length > 0) return false;
  if (/^(\d)\1+$/.test(d)) return false;
  return cardIssuer(d) && luhn(d);
}

/** US Social Security numbers written AAA-GG-SSSS (or with spaces), excluding never-issued areas. */
function usSsn(r: NumberRun): boolean {
  if (r.plus || r.paren || r.digits.length !== 9) return false;
  if (r.groups.length !== 3 || r.groups[0] !== 3 || r.groups[1] !== 2 || r.groups[2] !== 4) return false;
  if (r.seps !== '--' && r.seps !== '  ') return false;
  const area = Number(r.digits.slice(0, 3));
  if (area === 0 || area === 666 || area >= 900) return false;
  return r.digits.slice(3, 5) !== '00' && r.digits.slice(5) !== '0000';
}

/**
 * Phone numbers in the forms people write them: international `+CC …` (8–15 digits, E.164), or a
 * North American `(AAA) BBB-CCCC` / `AAA-BBB-CCCC` / `AAA.BBB.CCCC`. A bare run of digits is not a
 * phone number here (too many other numbers look like one).
 */
function phone(r: NumberRun): boolean {
  const n = r.digits.length;
  if (r.plus) return n >= 8 && n <= 15 && r.digits[0] !== '0';
  if (n !== 10 && !(n === 11 && r.digits[0] === '1')) return false;
  const g = r.groups;
  const nanp =
    (g.length === 3 && g[0] === 3 && g[1] === 3 && g[2] === 4) ||
    (g.length === 4 && g[0] === 1 && g[1] === 3 && g[2] === 3 && g[3] === 4);
  if (!nanp) return false;
  const seps = r.paren ? r.seps.slice(1) : r.seps;
  if (seps.length > 0 && new Set(seps).size !== 1) return false;
  const area = r.digits.slice(n === 11 ? 1 : 0);
  return area[0] !== '0' && area[0] !== '1';
}

/** Dotted-quad IPv4: each part 0–255, no leading zeros beyond one digit. */
function ipv4(text: string, r: NumberRun): boolean {
  if (r.plus || r.paren || r.seps !== '...' || r.groups.some((g) => g > 3)) return false;
  return text
    .slice(r.start, r.end)
    .split('.')
    .every((p) => Number(p) <= 255 && !(p.length > 1 && p[0] === '0'));
}

/** Two colons with at most four hex digits between: where an IPv6 address may be. */
const COLON_PAIR = /:[0-9a-fA-F]{0,4}:/g;

/** RFC 4291 IPv6 addresses (with a digit: `a::b` is C++ scope, never an address in prose). */
function ipv6(text: string, out: Span[]): void {
  COLON_PAIR.lastIndex = 0;
  for (;;) {
    const m = COLON_PAIR.exec(text);
    if (m === null) return;
    const colon = m.index;
    let s = colon;
    while (s > 0 && (isHex(text.charCodeAt(s - 1)) || text.charCodeAt(s - 1) === 58)) s--;
    let e = colon;
    while (
      e < text.length &&
      (isHex(text.charCodeAt(e)) || text.charCodeAt(e) === 58 || text.charCodeAt(e) === 46)
    )
      e++;
    while (e > colon && text.charCodeAt(e - 1) === 46) e--;
    const cand = text.slice(s, e);
    const before = s > 0 ? text.charCodeAt(s - 1) : 32;
    const after = e < text.length ? text.charCodeAt(e) : 32;
    if (cand.length >= 6 && /[0-9]/.test(cand) && !isWordish(before) && !isWordish(after) && isIPv6(cand))
      out.push({ start: s, end: e });
    COLON_PAIR.lastIndex = Math.max(e, colon + 1);
  }
}

// ---------------------------------------------------------------------------------------------- IBAN

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
function ibanValid(iban: string): boolean {
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
function iban(text: string, out: Span[]): void {
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

/** Where a National Insurance number may start (the letters the scheme uses, two digits). */
const NINO_START = /[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?[0-9]{2}/g;

/** UK National Insurance numbers: two letters (not D, F, I, Q, U, V; not O second), six digits, A–D. */
function ukNino(text: string, out: Span[]): void {
  const n = text.length;
  NINO_START.lastIndex = 0;
  for (;;) {
    const m = NINO_START.exec(text);
    if (m === null) return;
    const i = m.index;
    NINO_START.lastIndex = i + 1;
    if (i > 0 && isWordish(text.charCodeAt(i - 1))) continue;
    if (['BG', 'GB', 'NK', 'KN', 'TN', 'NT', 'ZZ'].includes(text.slice(i, i + 2))) continue;
    let j = i + 2;
    if (text.charCodeAt(j) === 32) j++;
    let digits = 0;
    while (j < n && digits < 6) {
      const c = text.charCodeAt(j);
      if (isDigit(c)) {
        digits++;
        j++;
      } else if (c === 32 && (digits === 2 || digits === 4)) j++;
      else break;
    }
    if (digits !== 6) continue;
    if (text.charCodeAt(j) === 32) j++;
    const suffix = text.charCodeAt(j);
    if (suffix < 65 || suffix > 68) continue;
    if (j + 1 < n && isWordish(text.charCodeAt(j + 1))) continue;
    out.push({ start: i, end: j + 1 });
    NINO_START.lastIndex = j + 1;
  }
}

// ------------------------------------------------------------------------------------------ secrets

/** Vendor key prefixes and the length of what follows (at least). */
const KEY_PREFIXES: readonly { prefix: string; min: number; body: (c: number) => boolean }[] = [
  { prefix: 'sk-ant-', min: 32, body: isBase64Url },
  { prefix: 'sk-proj-', min: 32, body: isBase64Url },
  { prefix: 'sk-', min: 20, body: isBase64Url },
  { prefix: 'ghp_', min: 36, body: isAlnum },
  { prefix: 'gho_', min: 36, body: isAlnum },
  { prefix: 'ghu_', min: 36, body: isAlnum },
  { prefix: 'ghs_', min: 36, body: isAlnum },
  { prefix: 'ghr_', min: 36, body: isAlnum },
  { prefix: 'github_pat_', min: 40, body: isWordish },
  { prefix: 'glpat-', min: 20, body: isBase64Url },
  { prefix: 'xoxb-', min: 20, body: isBase64Url },
  { prefix: 'xoxp-', min: 20, body: isBase64Url },
  { prefix: 'xoxa-', min: 20, body: isBase64Url },
  { prefix: 'xapp-', min: 20, body: isBase64Url },
  { prefix: 'AKIA', min: 16, body: (c) => isUpper(c) || isDigit(c) },
  { prefix: 'ASIA', min: 16, body: (c) => isUpper(c) || isDigit(c) },
  { prefix: 'AIza', min: 35, body: isBase64Url },
  { prefix: 'nvapi-', min: 40, body: isBase64Url },
  { prefix: 'hf_', min: 30, body: isAlnum },
  { prefix: 'npm_', min: 36, body: isAlnum },
  { prefix: 'sk_live_', min: 20, body: isAlnum },
  { prefix: 'rk_live_', min: 20, body: isAlnum },
  { prefix: 'sk_test_', min: 20, body: isAlnum },
  { prefix: 'pypi-', min: 50, body: isBase64Url },
];

/** Every prefix at once: the engine finds candidates in one pass. */
const KEY_START = new RegExp([...new Set(KEY_PREFIXES.map((k) => k.prefix))].join('|'), 'g');

function apiKey(text: string, out: Span[]): void {
  KEY_START.lastIndex = 0;
  for (;;) {
    const m = KEY_START.exec(text);
    if (m === null) return;
    const at = m.index;
    KEY_START.lastIndex = at + 1;
    const before = at > 0 ? text.charCodeAt(at - 1) : 32;
    if (isWordish(before)) continue;
    // The longest prefix that applies here (sk-ant- before sk-).
    for (const k of KEY_PREFIXES) {
      if (!text.startsWith(k.prefix, at)) continue;
      let e = at + k.prefix.length;
      while (e < text.length && k.body(text.charCodeAt(e))) e++;
      if (e - at - k.prefix.length >= k.min) {
        out.push({ start: at, end: e });
        KEY_START.lastIndex = e;
        break;
      }
    }
  }
}

/** PEM private keys: from `-----BEGIN … PRIVATE KEY-----` through its END line (or the text's end). */
function privateKey(text: string, out: Span[]): void {
  let at = text.indexOf('-----BEGIN ');
  while (at >= 0) {
    const headEnd = text.indexOf('-----', at + 11);
    const label = headEnd >= 0 && headEnd - at < 80 ? text.slice(at + 11, headEnd) : '';
    if (/^[A-Z0-9 ]*PRIVATE KEY$/.test(label)) {
      const endMarker = `-----END ${label}-----`;
      const stop = text.indexOf(endMarker, headEnd);
      const e = stop >= 0 ? stop + endMarker.length : text.length;
      out.push({ start: at, end: e });
      at = text.indexOf('-----BEGIN ', e);
    } else {
      at = text.indexOf('-----BEGIN ', at + 11);
    }
  }
}

/** JSON Web Tokens: `eyJ…` header, `.`, `eyJ…` payload, `.`, signature (base64url). */
function jwt(text: string, out: Span[]): void {
  let at = text.indexOf('eyJ');
  while (at >= 0) {
    const before = at > 0 ? text.charCodeAt(at - 1) : 32;
    let e = at;
    while (e < text.length && isBase64Url(text.charCodeAt(e))) e++;
    if (!isBase64Url(before) && e - at >= 10 && text.charCodeAt(e) === 46 && text.startsWith('eyJ', e + 1)) {
      let p = e + 1;
      while (p < text.length && isBase64Url(text.charCodeAt(p))) p++;
      if (p - e - 1 >= 10 && text.charCodeAt(p) === 46) {
        let s = p + 1;
        while (s < text.length && isBase64Url(text.charCodeAt(s))) s++;
        out.push({ start: at, end: s });
        e = s;
      }
    }
    // Every `eyJ` before `e` lies inside the run just read (`e` is past at least `eyJ`), after a
    // base64url character: none can start a token. Searching from `at + 3` read the run again for
    // each of them: `eyJeyJ…` was quadratic, and 180 KB of it held the event loop for seconds.
    at = text.indexOf('eyJ', e);
  }
}

/** Detectors that read the text themselves; the numeric ones read number runs (computed once). */
const TEXT_DETECTORS: Partial<Record<BuiltinDetector, Detector>> = {
  email,
  iban,
  uk_nino: ukNino,
  api_key: apiKey,
  private_key: privateKey,
  jwt,
};
const RUN_DETECTORS: Partial<Record<BuiltinDetector, (text: string, r: NumberRun) => boolean>> = {
  phone: (_t, r) => phone(r),
  payment_card: (_t, r) => paymentCard(r),
  us_ssn: (_t, r) => usSsn(r),
  ip_address: ipv4,
};

/** The placeholder label of each detector (`[EMAIL_…]`). */
export const DETECTOR_LABELS: Record<BuiltinDetector, string> = {
  email: 'EMAIL',
  phone: 'PHONE',
  payment_card: 'CARD',
  iban: 'IBAN',
  us_ssn: 'SSN',
  uk_nino: 'NINO',
  ip_address: 'IP',
  api_key: 'API_KEY',
  private_key: 'PRIVATE_KEY',
  jwt: 'JWT',
};

/** What each of `detectors` finds in `text` (only the detectors that found something). */
export function detectMany(text: string, detectors: Iterable<BuiltinDetector>): Map<BuiltinDetector, Span[]> {
  const found = new Map<BuiltinDetector, Span[]>();
  let runs: NumberRun[] | null = null;
  for (const d of detectors) {
    const out: Span[] = [];
    const direct = TEXT_DETECTORS[d];
    if (direct !== undefined) direct(text, out);
    const check = RUN_DETECTORS[d];
    if (check !== undefined) {
      runs ??= numberRuns(text);
      for (const r of runs) if (check(text, r)) out.push({ start: r.start, end: r.end });
    }
    if (d === 'ip_address') ipv6(text, out);
    if (out.length > 0)
      found.set(
        d,
        out.sort((a, b) => a.start - b.start),
      );
  }
  return found;
}

/** Every span `detector` finds in `text`, in order of start. */
export function detect(detector: BuiltinDetector, text: string): Span[] {
  return detectMany(text, [detector]).get(detector) ?? [];
}

export { luhn, ibanValid };
