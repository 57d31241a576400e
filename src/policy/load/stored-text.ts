/**
 * Policy texts an earlier Carapace accepted and stored, as this one reads them. The loader only
 * ever grows stricter for new input; a text that was valid when it was stored (a gateway's policy
 * revision) must still load, or a user who upgrades finds their sandbox's policy unreadable. Each
 * form below was accepted once and is refused now; it is read here as what it meant then, never
 * as anything that allows more.
 *
 * - `inference: { routes: {} }` (refused since an inference section must have a route): with no
 *   route, every model call was refused (400), as it is (503) without one; read as no
 *   section. Nothing else the section could hold then changes that (every name it uses had to be
 *   a route, and there was none).
 *
 * The reading removes the form from the text, leaving every other byte as the user wrote it (a
 * YAML re-rendering of the document where the text cannot be cut cleanly, as in a JSON text), and
 * puts a comment at the top that says what was read differently; `notes` says it for a log. A
 * text with no such form comes back unchanged, without being parsed.
 */
import { isDeepStrictEqual } from 'node:util';
import { isMap, isScalar, parseDocument, type Document } from 'yaml';

export interface StoredTextReading {
  /** The text as this version reads it: the stored text itself when nothing differs. */
  text: string;
  /** What was read differently, one line each; empty when nothing was. */
  notes: string[];
}

const EMPTY_ROUTES_NOTE =
  'an inference section without routes (routes: {}), accepted before, is read as no inference ' +
  'section: as then, every model call is refused';

/**
 * Could the text hold a legacy form? Cheap, and may say yes wrongly (the parse decides); not on a
 * comment line, so the note this reading leaves at the top does not make a text parsed each read.
 */
const MAYBE_EMPTY_ROUTES = /^[^#\n]*routes["']?\s*:\s*\{\s*\}/m;

export function readStoredPolicyText(text: string): StoredTextReading {
  if (!MAYBE_EMPTY_ROUTES.test(text)) return { text, notes: [] };
  const doc = parseDocument(text, { uniqueKeys: false, prettyErrors: false, logLevel: 'error' });
  if (doc.errors.length > 0 || !isMap(doc.contents)) return { text, notes: [] };
  const inference = doc.get('inference', true);
  const routes = isMap(inference) ? inference.get('routes', true) : undefined;
  if (!isMap(routes) || routes.items.length > 0) return { text, notes: [] };
  const cut = withoutTopLevelKey(text, doc, 'inference');
  doc.delete('inference');
  const read = cut !== null && sameData(cut, doc) ? cut : doc.toString({ lineWidth: 0 });
  return { text: `# carapace: ${EMPTY_ROUTES_NOTE}.\n${read}`, notes: [EMPTY_ROUTES_NOTE] };
}

/** The text without the lines of a top-level key of a block map, or null where it has none. */
function withoutTopLevelKey(text: string, doc: Document, key: string): string | null {
  if (!isMap(doc.contents) || doc.contents.flow === true) return null;
  const pair = doc.contents.items.find((p) => isScalar(p.key) && p.key.value === key);
  const from = isScalar(pair?.key) ? pair.key.range?.[0] : undefined;
  const to = (pair?.value as { range?: [number, number, number] } | null | undefined)?.range?.[1];
  if (from === undefined || to === undefined) return null;
  const start = text.lastIndexOf('\n', from - 1) + 1;
  // A block value ends after its last line's newline; a flow value at its closing bracket.
  const lineEnd = text[to - 1] === '\n' ? to - 1 : text.indexOf('\n', to);
  let end = lineEnd === -1 ? text.length : lineEnd + 1;
  // Indented comment lines after it were inside the section.
  const comment = /[ \t]+#[^\n]*(?:\n|$)/y;
  comment.lastIndex = end;
  while (end < text.length && comment.test(text)) end = comment.lastIndex;
  return text.slice(0, start) + text.slice(end);
}

/** The cut is kept only if it reads as the document with the key deleted. */
function sameData(text: string, expected: Document): boolean {
  const doc = parseDocument(text, { uniqueKeys: false, prettyErrors: false, logLevel: 'error' });
  return doc.errors.length === 0 && isDeepStrictEqual(doc.toJS(), expected.toJS());
}
