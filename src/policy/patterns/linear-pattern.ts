/**
 * Custom privacy patterns (`inference.privacy[].match`) run over the agent's prompts, on the event
 * loop that serves every sandbox. A backtracking engine can take exponential (or quadratic) time
 * on a crafted input, so they run on V8's linear-time engine (the `l` flag): time proportional to
 * pattern × text, whatever the text. That engine is behind a V8 flag, switched on here once for
 * this process; it affects only expressions created with `l`. It has no backreferences,
 * lookarounds, `u` or `i` flags, and is slower than the backtracking engine, so a pattern that
 * starts with a literal is searched with `indexOf` first and the engine runs only where it can
 * match (docs/router.md, "Privacy rules").
 */
import { setFlagsFromString } from 'node:v8';

let enabled = false;

function enable(): void {
  if (enabled) return;
  setFlagsFromString('--enable-experimental-regexp-engine');
  enabled = true;
}

export interface LinearPattern {
  readonly source: string;
  /** Every match in `text`, as [start, end) spans in order. */
  spans(text: string): { start: number; end: number }[];
}

/** Compiles a pattern for the linear-time engine, or says why it cannot run there. */
export function compileLinearPattern(pattern: string): LinearPattern | { error: string } {
  enable();
  let global: RegExp;
  let sticky: RegExp;
  try {
    // The `l` flag exists only with the V8 flag above: eslint does not know it.
    global = new RegExp(pattern, 'gl'); // eslint-disable-line no-invalid-regexp
    sticky = new RegExp(pattern, 'yl'); // eslint-disable-line no-invalid-regexp
  } catch (err) {
    const message = (err as Error).message;
    return {
      error: /linear time/.test(message)
        ? 'the pattern cannot run in linear time (backreferences and lookarounds are not supported)'
        : `not a valid regular expression: ${message}`,
    };
  }
  if (global.test(''))
    return { error: 'the pattern matches empty text; it must match at least one character' };
  const prefix = literalPrefix(pattern);
  return {
    source: pattern,
    spans(text: string) {
      const out: { start: number; end: number }[] = [];
      if (prefix.length >= 2) {
        let at = text.indexOf(prefix);
        while (at >= 0) {
          sticky.lastIndex = at;
          const m = sticky.exec(text);
          if (m !== null && m[0].length > 0) {
            out.push({ start: at, end: at + m[0].length });
            at = text.indexOf(prefix, at + m[0].length);
          } else {
            at = text.indexOf(prefix, at + 1);
          }
        }
        return out;
      }
      global.lastIndex = 0;
      for (;;) {
        const m = global.exec(text);
        if (m === null) break;
        if (m[0].length === 0) {
          global.lastIndex++;
          continue;
        }
        out.push({ start: m.index, end: m.index + m[0].length });
      }
      return out;
    },
  };
}

/**
 * The literal every match starts with, or '' when there is none or it cannot be known cheaply
 * (an alternation anywhere, an anchor, a class or group first).
 */
function literalPrefix(pattern: string): string {
  let inClass = false;
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === '\\') {
      i++;
      continue;
    }
    if (inClass) {
      if (c === ']') inClass = false;
      continue;
    }
    if (c === '[') inClass = true;
    else if (c === '|') return '';
  }
  let out = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i] as string;
    if ('\\^$.|?*+()[]{}'.includes(c)) {
      if ('?*{'.includes(c)) out = out.slice(0, -1);
      return out;
    }
    out += c;
  }
  return out;
}
