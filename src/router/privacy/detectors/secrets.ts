/** Secrets with a known shape: vendor API keys, PEM private keys, JWTs. */
import { isDigit, isUpper, isAlnum, isBase64Url, isWordish, type Span } from './chars.js';

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

export function apiKey(text: string, out: Span[]): void {
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
export function privateKey(text: string, out: Span[]): void {
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
export function jwt(text: string, out: Span[]): void {
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
