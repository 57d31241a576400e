/**
 * YAML text → a `yaml` Document, with every syntax problem as a positioned diagnostic, and a way
 * back from a data path (`['network_policies', 'github', 'endpoints', 0]`) to the node that holds it.
 *
 * Duplicate keys are found here rather than by the yaml package's `uniqueKeys`, so that the message
 * can say which map they are in and where the first one is. A plain (unquoted) scalar that runs
 * over several lines is reported too: in a policy that is almost always a wrongly indented list
 * item or key, which YAML would otherwise fold silently into the previous value.
 */
import {
  isCollection,
  isMap,
  isPair,
  isScalar,
  isSeq,
  LineCounter,
  parseDocument,
  visit,
  type Alias,
  type Document,
  type Node,
  type Pair,
  type YAMLMap,
} from 'yaml';
import type { Diagnostic, PolicyIssue, PolicyPath } from '../diagnostics.js';
import { describeContext } from './schema-issues.js';

export interface SourceDocument {
  file: string;
  text: string;
  document: Document;
  lineCounter: LineCounter;
}

/** Problems the yaml package reports, keyed by its error code, with what to do about them. */
const SYNTAX_HINTS: Record<string, string> = {
  TAB_AS_INDENT: 'a tab is used for indentation; YAML allows only spaces there — replace the tab with spaces',
  BAD_INDENT: 'wrong indentation: items of one map or list must start in the same column',
  MISSING_CHAR: 'a closing bracket, brace or quote is missing',
  MULTILINE_IMPLICIT_KEY: 'a key must fit on one line; check the indentation or add the missing ":"',
  UNEXPECTED_TOKEN: 'unexpected text here; check the indentation and the ":" after each key',
  BLOCK_AS_IMPLICIT_KEY: 'a nested block cannot be a key; check the indentation',
  DUPLICATE_KEY: 'duplicate key',
  MULTIPLE_DOCS: 'a policy file holds one YAML document; remove the extra "---"',
  ALIAS_PROPS: 'an alias cannot carry an anchor or tag',
  BAD_ALIAS: 'unknown alias; define the anchor (&name) before using *name',
};

export function parseSource(text: string, file: string): { source: SourceDocument; errors: Diagnostic[] } {
  const lineCounter = new LineCounter();
  // logLevel 'error': the yaml package would otherwise print warnings (e.g. about a list used as a
  // key) on stderr while converting; such keys are reported as diagnostics by structuralIssues.
  const document = parseDocument(text, {
    lineCounter,
    uniqueKeys: false,
    prettyErrors: false,
    logLevel: 'error',
  });
  const source: SourceDocument = { file, text, document, lineCounter };
  const errors: Diagnostic[] = [];
  const seen = new Set<number>();
  for (const err of document.errors) {
    // The parser often reports one mistake several ways at one place; the first is the clearest.
    if (seen.has(err.pos[0])) continue;
    seen.add(err.pos[0]);
    const hint = SYNTAX_HINTS[err.code];
    const detail = err.message.split('\n')[0] ?? '';
    // A flow list or map left open: the parser says "indentation" where its input ended or the
    // next key began; the mistake is the opening bracket, so say that, and point there.
    const unclosed = / end with a ([\]}])$/.exec(detail)?.[1];
    const opener =
      unclosed === undefined ? null : unclosedOpener(text, err.pos[0], unclosed === ']' ? '[' : '{');
    if (unclosed !== undefined && opener !== null) {
      const what = unclosed === ']' ? 'list' : 'map';
      errors.push(
        at(
          source,
          opener,
          `this ${what} is not closed: add the "${unclosed}" at its end (or check the indentation)`,
        ),
      );
      continue;
    }
    const message = hint === undefined ? `YAML syntax error: ${detail}` : `${hint} (${detail})`;
    errors.push(at(source, firstVisible(text, err.pos[0]), message));
  }
  return { source, errors };
}

/**
 * The offset of the innermost `open` bracket before `end` that nothing closes, or null. Brackets in
 * quotes and comments do not count; one in a plain value (`/a[1]`) is unlikely to be left open,
 * and then the parser's own position is used.
 */
function unclosedOpener(text: string, end: number, open: '[' | '{'): number | null {
  const stack: { ch: string; at: number }[] = [];
  let quote: string | null = null;
  for (let i = 0; i < end && i < text.length; i++) {
    const ch = text[i]!;
    if (quote !== null) {
      if (ch === '\\' && quote === '"') i++;
      else if (ch === quote) quote = null;
      continue;
    }
    if (ch === '"' || ch === "'") quote = ch;
    else if (ch === '#' && (i === 0 || /\s/.test(text[i - 1]!))) {
      const nl = text.indexOf('\n', i);
      i = nl === -1 ? text.length : nl;
    } else if (ch === '[' || ch === '{') stack.push({ ch, at: i });
    else if ((ch === ']' || ch === '}') && stack.length > 0) stack.pop();
  }
  for (let i = stack.length - 1; i >= 0; i--) if (stack[i]!.ch === open) return stack[i]!.at;
  return null;
}

/** Every alias of the document (`*name`), keys included. */
function aliases(document: Document): Alias[] {
  const found: Alias[] = [];
  visit(document, { Alias: (_key, node) => void found.push(node) });
  return found;
}

/**
 * Where converting the document to data failed (the yaml package throws for an alias whose anchor
 * is not defined before it, and for aliases that expand past the limit, an alias bomb).
 */
export function conversionFailure(source: SourceDocument, err: unknown): Diagnostic {
  const all = aliases(source.document);
  const first = all[0];
  const message =
    /alias count/i.test(String((err as Error)?.message)) && first !== undefined
      ? `the aliases (*${first.source} and others) expand to too much data; write the values out instead`
      : `this document cannot be read as data: ${(err as Error)?.message ?? String(err)}`;
  return at(source, first === undefined ? 0 : rangeStart(first), message);
}

/**
 * Problems that leave the document without meaningful data, reported instead of what the schema
 * would say about it: an alias whose anchor is not defined before it (converting would throw), and
 * a list or a map used as a key (it would become a string such as "[ /usr, /tmp ]").
 */
export function conversionIssues(source: SourceDocument): Diagnostic[] {
  const out: Diagnostic[] = [];
  for (const alias of aliases(source.document)) {
    if (alias.resolve(source.document) === undefined) {
      out.push(
        at(
          source,
          rangeStart(alias),
          `unknown alias *${alias.source}; define the anchor (&${alias.source}) before using it`,
        ),
      );
    }
  }
  visit(source.document, {
    Pair: (_key, pair) => {
      if (isCollection(pair.key)) {
        out.push(
          at(
            source,
            rangeStart(pair.key),
            'a list or a map is used as a key; a key is a single name: check the indentation and the ":"',
          ),
        );
      }
    },
  });
  return out;
}

/** Duplicate keys and multi-line plain scalars, as issues at their node. */
export function structuralIssues(source: SourceDocument): Diagnostic[] {
  const out: Diagnostic[] = [];
  walk(source.document.contents, [], (node, path) => {
    if (isMap(node)) {
      const seen = new Map<string, Pair>();
      for (const pair of node.items) {
        if (isCollection(pair.key)) {
          out.push(
            at(
              source,
              rangeStart(pair.key),
              'a list or a map is used as a key; a key is a single name: check the indentation and the ":"',
            ),
          );
          continue;
        }
        const key = keyText(pair);
        if (key === null) continue;
        const first = seen.get(key);
        if (first === undefined) {
          seen.set(key, pair);
          continue;
        }
        const firstLine = lineOf(source, first.key as Node);
        const what = path.length === 1 && path[0] === 'network_policies' ? 'network policy' : 'key';
        out.push(
          at(
            source,
            rangeStart(pair.key as Node),
            `duplicate ${what} "${key}" in ${describeContext(path)} (first defined on line ${firstLine}); ` +
              'remove one or merge them',
          ),
        );
      }
    } else if (isScalar(node) && node.type === 'PLAIN' && typeof node.value === 'string' && node.range) {
      const raw = source.text.slice(node.range[0], node.range[1]);
      // List items of a policy are paths, hosts and ports, never prose: one folded over several
      // lines is a misindented item. In a map value, fold only flags text that looks like YAML.
      const inList = typeof path[path.length - 1] === 'number';
      if (raw.includes('\n') && (inList || /(^|\s)-\s|:\s/.test(node.value))) {
        out.push(
          at(
            source,
            node.range[0],
            `value "${node.value}" runs over several lines: a following line is probably indented too far; ` +
              'start each list item or key in the same column as the one before it, or quote the value',
          ),
        );
      }
    }
  });
  return out;
}

type Visit = (node: unknown, path: (string | number)[]) => void;

function walk(node: unknown, path: (string | number)[], visit: Visit): void {
  visit(node, path);
  if (isMap(node)) {
    for (const pair of node.items) {
      const key = keyText(pair);
      if (key !== null) walk(pair.value, [...path, key], visit);
    }
  } else if (isSeq(node)) {
    node.items.forEach((item, i) => walk(item, [...path, i], visit));
  }
}

function keyText(pair: unknown): string | null {
  if (!isPair(pair)) return null;
  const key = pair.key;
  if (isScalar(key)) return String(key.value);
  if (key === null || key === undefined) return null;
  return String(key);
}

/** The node at `path`, or the deepest existing ancestor when part of the path is missing. */
function nodeAt(document: Document, path: PolicyPath): { node: unknown; pair: Pair | null; exact: boolean } {
  let node: unknown = document.contents;
  let pair: Pair | null = null;
  for (let i = 0; i < path.length; i++) {
    const seg = path[i];
    let next: unknown;
    let nextPair: Pair | null = null;
    if (isMap(node)) {
      nextPair = findPair(node, String(seg));
      next = nextPair?.value;
      if (nextPair === null) return { node, pair, exact: false };
    } else if (isSeq(node) && typeof seg === 'number') {
      next = node.items[seg];
      if (next === undefined) return { node, pair, exact: false };
    } else {
      return { node, pair, exact: false };
    }
    node = next;
    pair = nextPair;
  }
  return { node, pair, exact: true };
}

function findPair(map: YAMLMap, key: string): Pair | null {
  // The last pair wins, as it does in the data the schema saw.
  for (let i = map.items.length - 1; i >= 0; i--) {
    const pair = map.items[i];
    if (pair !== undefined && keyText(pair) === key) return pair as Pair;
  }
  return null;
}

/** Offset of the node (or its key) that a data path names; 0 when the document is empty. */
export function offsetOf(source: SourceDocument, path: PolicyPath, part: 'key' | 'value' = 'value'): number {
  const { node, pair, exact } = nodeAt(source.document, path);
  if (exact && part === 'key' && pair !== null && isNodeLike(pair.key)) return rangeStart(pair.key);
  const empty = node === null || node === undefined || (isScalar(node) && node.value === null);
  if (exact && empty && pair !== null && isNodeLike(pair.key)) {
    // `key:` with nothing after it: point at the key.
    return rangeStart(pair.key);
  }
  if (isNodeLike(node)) return rangeStart(node);
  if (pair !== null && isNodeLike(pair.key)) return rangeStart(pair.key);
  return 0;
}

export function issueToDiagnostic(source: SourceDocument, issue: PolicyIssue): Diagnostic {
  return at(source, offsetOf(source, issue.path, issue.at), issue.message);
}

function isNodeLike(value: unknown): value is Node {
  return typeof value === 'object' && value !== null && 'range' in value;
}

function rangeStart(node: Node): number {
  return node.range?.[0] ?? 0;
}

function lineOf(source: SourceDocument, node: Node): number {
  return source.lineCounter.linePos(rangeStart(node)).line;
}

function at(source: SourceDocument, offset: number, message: string): Diagnostic {
  if (source.text.length === 0) return { file: source.file, line: 1, col: 1, message };
  const pos = source.lineCounter.linePos(Math.min(offset, Math.max(0, source.text.length - 1)));
  return { file: source.file, line: pos.line, col: pos.col, message };
}

/** The yaml package points some errors at the indentation before a token; point at the token. */
function firstVisible(text: string, offset: number): number {
  let i = offset;
  while (i < text.length && text[i] === ' ') i++;
  if (i >= text.length || text[i] === '\n' || text[i] === '\r') return offset;
  return i;
}
