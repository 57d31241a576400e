/**
 * Classifying a request before it leaves the host: the privacy rules of the sandbox's policy
 * (built-in detectors and custom patterns) run over every content string of the request body, and
 * say which rules fired and where. What the request then becomes (routed, redacted, refused) is the
 * router's business; this file only looks.
 *
 * Which strings count as content: every string value of the JSON body except structural fields
 * (model, role, type, ids, tool names) and inline binary (data: URLs, base64 `data`), so that
 * system prompts, messages, tool results, tool arguments and tool descriptions are all read,
 * whatever the API.
 */
import { compileLinearPattern, type BuiltinDetector, type PrivacyRule } from '../../policy/index.js';
import { DETECTOR_LABELS, detectMany, type Span } from './detectors.js';

const EMPTY: ReadonlyMap<BuiltinDetector, Span[]> = new Map();

export type PrivacyAction = 'route' | 'redact' | 'deny';

export interface CompiledRule {
  name: string;
  action: PrivacyAction;
  route: string | null;
  detectors: readonly BuiltinDetector[];
  pattern: { spans(text: string): Span[] } | null;
  /** Placeholder label for what a custom pattern matched (from the rule's name). */
  label: string;
}

export function compileRules(rules: readonly PrivacyRule[]): CompiledRule[] {
  return rules.map((r) => {
    let pattern: CompiledRule['pattern'] = null;
    if (r.match !== undefined) {
      const c = compileLinearPattern(r.match);
      // The policy loader refused patterns that do not compile; a generation holds only valid ones.
      if ('error' in c) throw new Error(`privacy rule ${r.name}: ${c.error}`);
      pattern = c;
    }
    return {
      name: r.name,
      action: r.action ?? 'route',
      route: r.route ?? null,
      detectors: r.detect ?? [],
      pattern,
      label:
        r.name
          .toUpperCase()
          .replace(/[^A-Z0-9]+/g, '_')
          .replace(/^_+|_+$/g, '')
          .slice(0, 24) || 'REDACTED',
    };
  });
}

/** One thing a rule found in one string. */
export interface Hit {
  rule: CompiledRule;
  start: number;
  end: number;
  label: string;
}

/** Keys whose string values are structure, not content. */
const STRUCTURAL = new Set([
  'model',
  'role',
  'type',
  'id',
  'object',
  'tool_call_id',
  'call_id',
  'tool_use_id',
  'name',
  'media_type',
  'data',
  'finish_reason',
  'stop_reason',
  'encoding_format',
  'detail',
  'cache_control',
  'previous_response_id',
  'service_tier',
]);

/** A content string of a request body and a way to replace it. */
export interface ContentString {
  value: string;
  set(next: string): void;
}

/** Every content string of a JSON body, in document order. */
export function contentStrings(body: unknown): ContentString[] {
  const out: ContentString[] = [];
  const walk = (node: unknown): void => {
    if (Array.isArray(node)) {
      for (let i = 0; i < node.length; i++) {
        const v: unknown = node[i];
        if (typeof v === 'string') {
          if (!v.startsWith('data:')) out.push({ value: v, set: (n) => (node[i] = n) });
        } else if (typeof v === 'object' && v !== null) walk(v);
      }
      return;
    }
    if (typeof node !== 'object' || node === null) return;
    const obj = node as Record<string, unknown>;
    for (const key of Object.keys(obj)) {
      const v = obj[key];
      if (typeof v === 'string') {
        if (STRUCTURAL.has(key) || v.startsWith('data:')) continue;
        out.push({ value: v, set: (n) => (obj[key] = n) });
      } else if (typeof v === 'object' && v !== null) walk(v);
    }
  };
  walk(body);
  return out;
}

export interface Classification {
  /** Rules that fired, in policy order. */
  fired: CompiledRule[];
  /** What each content string holds (same order as the strings); empty arrays where nothing. */
  hits: Hit[][];
}

/** Runs every rule over every string; each built-in detector runs once per string. */
export function classify(strings: readonly string[], rules: readonly CompiledRule[]): Classification {
  const firedSet = new Set<CompiledRule>();
  const hits: Hit[][] = [];
  const wanted = new Set<BuiltinDetector>();
  for (const r of rules) for (const d of r.detectors) wanted.add(d);
  for (const text of strings) {
    const found: Hit[] = [];
    if (text.length > 0) {
      const byDetector = wanted.size > 0 ? detectMany(text, wanted) : EMPTY;
      for (const rule of rules) {
        for (const d of rule.detectors) {
          const spans = byDetector.get(d);
          if (spans === undefined) continue;
          firedSet.add(rule);
          for (const s of spans) found.push({ rule, start: s.start, end: s.end, label: DETECTOR_LABELS[d] });
        }
        if (rule.pattern !== null) {
          const spans = rule.pattern.spans(text);
          if (spans.length > 0) firedSet.add(rule);
          for (const s of spans) found.push({ rule, start: s.start, end: s.end, label: rule.label });
        }
      }
    }
    hits.push(found);
  }
  return { fired: rules.filter((r) => firedSet.has(r)), hits };
}
