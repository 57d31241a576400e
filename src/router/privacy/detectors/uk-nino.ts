/** UK National Insurance numbers. */
import { isDigit, isWordish, type Span } from './chars.js';

/** Where a National Insurance number may start (the letters the scheme uses, two digits). */
const NINO_START = /[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?[0-9]{2}/g;

/** UK National Insurance numbers: two letters (not D, F, I, Q, U, V; not O second), six digits, A–D. */
export function ukNino(text: string, out: Span[]): void {
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
