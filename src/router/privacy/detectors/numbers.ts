/**
 * The numeric detectors: payment cards (Luhn and an issuer's prefix), US SSNs, phone numbers and
 * IPv4 addresses, read from number runs computed once per text; IPv6 addresses from their colons.
 */
import { isIPv6 } from 'node:net';
import { isDigit, isUpper, isLower, isHex, isWordish, type Span } from './chars.js';

/**
 * A run of digits with single separators between groups (`4111 1111-1111 1111`, `078-05-1120`,
 * `+44 20 7946 0958`, `(212) 555-0100`): the candidate form every numeric detector reads.
 */
export interface NumberRun {
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
export function numberRuns(text: string): NumberRun[] {
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

export function luhn(digits: string): boolean {
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
export function paymentCard(r: NumberRun): boolean {
  if (r.plus || r.paren) return false;
  const d = r.digits;
  if (d.length < 12 || d.length > 19) return false;
  if (r.seps.length > 0 && (new Set(r.seps).size !== 1 || r.seps[0] === '.')) return false;
  if (r.groups.some((g) => g < 3) && r.seps.length > 0) return false;
  if (/^(\d)\1+$/.test(d)) return false;
  return cardIssuer(d) && luhn(d);
}

/** US Social Security numbers written AAA-GG-SSSS (or with spaces), excluding never-issued areas. */
export function usSsn(r: NumberRun): boolean {
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
export function phone(r: NumberRun): boolean {
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
export function ipv4(text: string, r: NumberRun): boolean {
  if (r.plus || r.paren || r.seps !== '...' || r.groups.some((g) => g > 3)) return false;
  return text
    .slice(r.start, r.end)
    .split('.')
    .every((p) => Number(p) <= 255 && !(p.length > 1 && p[0] === '0'));
}

/** Two colons with at most four hex digits between: where an IPv6 address may be. */
const COLON_PAIR = /:[0-9a-fA-F]{0,4}:/g;

/** RFC 4291 IPv6 addresses (with a digit: `a::b` is C++ scope, never an address in prose). */
export function ipv6(text: string, out: Span[]): void {
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
