/** Email addresses: a bounded scan out from each `@`. */
import { isAlnum, type Span } from './chars.js';

const isLocalChar = (c: number): boolean =>
  isAlnum(c) || c === 46 || c === 95 || c === 37 || c === 43 || c === 45 || c === 39;
const isDomainChar = (c: number): boolean => isAlnum(c) || c === 45 || c === 46;

/** local@domain.tld: local ≤ 64 characters, a dotted domain ≤ 253 with a letter TLD of 2+. */
export function email(text: string, out: Span[]): void {
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
