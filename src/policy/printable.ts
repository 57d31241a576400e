/**
 * Text that came from a sandbox, made safe to show: what a sandbox controls (the paths of its
 * executables, the SNI it sends, names it asks for) reaches audit reasons, finding titles and the
 * 403 body, and from there a person's terminal (`logs`, a viewer, `jq -r`, curl printing a body).
 *
 * Threat: a file named `/tmp/x\e[2J\e]0;…\a` or one with U+202E (right-to-left override) that
 * rewrites the operator's screen or makes one program's name read as another's. JSON escapes C0
 * controls but not DEL, the C1 controls (U+0080–U+009F, which terminals may take as CSI/OSC) or
 * Unicode's format characters, so every one of them is escaped here as `\xNN` / `\u{N}`: the text
 * stays one line, shows every byte that is not plain, and never acts on the terminal. Structured
 * fields (the audit's `actor.process.file.path`) keep the exact value, JSON-encoded; a reader that
 * prints them raw must escape them itself.
 */

// C0 and DEL, C1, the invisible format and bidirectional controls, line/paragraph separators, BOM,
// and (with the u flag, a surrogate in the class is a lone one) surrogates without a pair.
const UNSAFE =
  // eslint-disable-next-line no-control-regex -- matching control characters is the point
  /[\u0000-\u001f\u007f-\u009f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ufff9-\ufffb\ud800-\udfff]/gu;

function escape(ch: string): string {
  const code = ch.codePointAt(0) as number;
  return code <= 0xff ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u{${code.toString(16)}}`;
}

/** `s` with every control, format and bidi character escaped; unchanged when it has none. */
export function printable(s: string): string {
  UNSAFE.lastIndex = 0;
  return UNSAFE.test(s) ? s.replace(UNSAFE, escape) : s;
}

/**
 * `value` as JSON (`indent` as JSON.stringify takes it) with the same characters escaped, as
 * `\uXXXX`: the same JSON value, nothing a terminal acts on. JSON.stringify escapes C0 controls
 * itself (and lone surrogates), and C0 outside strings is only its own indentation's newlines.
 */
export function printableJson(value: unknown, indent?: number): string {
  const json = JSON.stringify(value, null, indent) ?? 'null';
  UNSAFE.lastIndex = 0;
  if (!UNSAFE.test(json)) return json;
  return json.replace(UNSAFE, (c) => {
    const code = c.charCodeAt(0);
    return code < 0x20 ? c : `\\u${code.toString(16).padStart(4, '0')}`;
  });
}
