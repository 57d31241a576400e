/**
 * YAML text → typed policy (or preset), with every syntax, schema and semantic problem reported in
 * one run as `file:line:col: message`.
 */
import { readFileSync } from 'node:fs';
import type { Document } from 'yaml';
import {
  PolicyError,
  formatPath,
  policyErrorAt,
  sortDiagnostics,
  type Diagnostic,
  type PolicyIssue,
} from '../diagnostics.js';
import { PolicySchema, PresetSchema, type Policy, type Preset } from '../schema/schema.js';
import type { Inference } from '../schema/schema-extensions.js';
import { issuesFromZod } from './schema-issues.js';
import { checkNetworkPolicyData, checkPolicyData, startWarnings } from './semantic-checks.js';
import { methodWarnings } from './http-methods.js';
import {
  conversionFailure,
  conversionIssues,
  issueToDiagnostic,
  parseSource,
  structuralIssues,
  type SourceDocument,
} from './yaml-source.js';

/**
 * `warnings`: what a valid file may not mean as written, said but not refused: what keeps a
 * policy from starting a sandbox here (startWarnings), and a rule's method no server is likely to
 * know (a typo such as GTE, http-methods.ts).
 */
export type ParseResult =
  | { ok: true; policy: Policy; document: Document; warnings: Diagnostic[] }
  | { ok: false; diagnostics: Diagnostic[] };
export type PresetParseResult =
  | { ok: true; preset: Preset; document: Document; warnings: Diagnostic[] }
  | { ok: false; diagnostics: Diagnostic[] };
export type AnyParseResult =
  | { ok: true; kind: 'policy'; policy: Policy; document: Document; warnings: Diagnostic[] }
  | { ok: true; kind: 'preset'; preset: Preset; document: Document; warnings: Diagnostic[] }
  | { ok: false; diagnostics: Diagnostic[] };

type Kind = 'policy' | 'preset';

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function validateSource(
  source: SourceDocument,
  syntax: Diagnostic[],
  kind: Kind,
): { data: unknown; diagnostics: Diagnostic[] } {
  const blocking = conversionIssues(source);
  const diagnostics = [...syntax, ...blocking, ...structuralIssues(source)];
  // A document the parser could not make sense of would only produce echoes of the syntax errors.
  let fatal = source.document.errors.length > 0 || blocking.length > 0;
  let data: unknown;
  if (!fatal) {
    try {
      data = source.document.toJS({ maxAliasCount: 100 });
    } catch (err) {
      diagnostics.push(conversionFailure(source, err)); // an alias bomb
      fatal = true;
    }
  }
  if (!fatal) {
    for (const issue of schemaAndSemanticIssues(data, kind))
      diagnostics.push(issueToDiagnostic(source, issue));
  }
  return { data, diagnostics: dedupe(sortDiagnostics(diagnostics)) };
}

function schemaAndSemanticIssues(data: unknown, kind: Kind): PolicyIssue[] {
  if (data === null || data === undefined) {
    return [
      {
        path: [],
        message:
          kind === 'policy'
            ? 'the file is empty; a policy needs at least "version: 1"'
            : 'the file is empty; a preset needs "preset: {name: …}" and "network_policies"',
      },
    ];
  }
  if (!isRecord(data))
    return [
      {
        path: [],
        message: `the file must be a map of keys (${kind === 'policy' ? 'version, network_policies, …' : 'preset, network_policies'})`,
      },
    ];
  const schema = kind === 'policy' ? PolicySchema : PresetSchema;
  const result = schema.safeParse(data);
  const issues: PolicyIssue[] = result.success
    ? []
    : result.error.issues.flatMap((i) => issuesFromZod(i, data, schema));
  if (kind === 'policy') {
    issues.push(...checkPolicyData(data));
  } else if (isRecord(data.network_policies)) {
    checkNetworkPolicyData(data.network_policies, ['network_policies'], issues);
  }
  return issues;
}

function dedupe(list: Diagnostic[]): Diagnostic[] {
  const seen = new Set<string>();
  return list.filter((d) => {
    const key = `${d.line}:${d.col}:${d.message}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/** Parses and validates a policy. All problems are returned at once; nothing throws. */
export function parsePolicy(text: string, file: string): ParseResult {
  const { source, errors } = parseSource(text, file);
  const { data, diagnostics } = validateSource(source, errors, 'policy');
  if (diagnostics.length > 0) return { ok: false, diagnostics };
  const policy = data as Policy;
  return { ok: true, policy, document: source.document, warnings: warningsOf(source, policy) };
}

function warningsOf(source: SourceDocument, policy: Policy): Diagnostic[] {
  const issues = [...startWarnings(policy), ...methodWarnings(policy.network_policies)];
  return sortDiagnostics(issues.map((issue) => issueToDiagnostic(source, issue)));
}

function presetWarnings(source: SourceDocument, preset: Preset): Diagnostic[] {
  return methodWarnings(preset.network_policies).map((issue) => issueToDiagnostic(source, issue));
}

/** Parses and validates a preset file (`preset: {name, description}` + `network_policies`). */
export function parsePreset(text: string, file: string): PresetParseResult {
  const { source, errors } = parseSource(text, file);
  const { data, diagnostics } = validateSource(source, errors, 'preset');
  if (diagnostics.length > 0) return { ok: false, diagnostics };
  const preset = data as Preset;
  return { ok: true, preset, document: source.document, warnings: presetWarnings(source, preset) };
}

/** A file with a top-level `preset:` key is a preset; anything else is a policy. */
export function parsePolicyOrPreset(text: string, file: string): AnyParseResult {
  const { source, errors } = parseSource(text, file);
  const contents = source.document.contents;
  const looksLikePreset =
    contents !== null && typeof contents === 'object' && 'has' in contents && source.document.has('preset');
  const kind: Kind = looksLikePreset ? 'preset' : 'policy';
  const { data, diagnostics } = validateSource(source, errors, kind);
  if (diagnostics.length > 0) return { ok: false, diagnostics };
  return kind === 'policy'
    ? {
        ok: true,
        kind,
        policy: data as Policy,
        document: source.document,
        warnings: warningsOf(source, data as Policy),
      }
    : {
        ok: true,
        kind,
        preset: data as Preset,
        document: source.document,
        warnings: presetWarnings(source, data as Preset),
      };
}

export type InferenceParseResult =
  { ok: true; inference: Inference } | { ok: false; diagnostics: Diagnostic[] };

/**
 * An `inference` section on its own (`carapace inference set --from FILE`): a file holding the
 * section itself (`routes:` at the top) or a policy with an `inference:` key. Checked as a policy
 * holding only that section would be, each problem at its place in this file (not in the policy
 * the section goes into, which the user never sees).
 */
export function parseInferenceSection(text: string, file: string): InferenceParseResult {
  const { source, errors } = parseSource(text, file);
  const blocking = conversionIssues(source);
  const diagnostics = [...errors, ...blocking, ...structuralIssues(source)];
  let data: unknown;
  if (source.document.errors.length === 0 && blocking.length === 0) {
    try {
      data = source.document.toJS({ maxAliasCount: 100 });
    } catch (err) {
      diagnostics.push(conversionFailure(source, err));
    }
  }
  const bare = isRecord(data) && 'routes' in data;
  const section = bare ? data : isRecord(data) ? data.inference : undefined;
  if (diagnostics.length === 0 && !isRecord(section))
    diagnostics.push(
      issueToDiagnostic(source, {
        path: isRecord(data) && 'inference' in data ? ['inference'] : [],
        message: 'no inference section: write one with "routes:" at the top, or a policy with "inference:"',
      }),
    );
  if (diagnostics.length === 0) {
    // Every issue a section alone can cause lies under `inference`; its path in this file drops
    // that key when the file is the bare section.
    for (const issue of schemaAndSemanticIssues({ version: 1, inference: section }, 'policy')) {
      const inner = issue.path[0] === 'inference' ? issue.path.slice(1) : [];
      diagnostics.push(issueToDiagnostic(source, { ...issue, path: bare ? inner : ['inference', ...inner] }));
    }
  }
  if (diagnostics.length > 0) return { ok: false, diagnostics: dedupe(sortDiagnostics(diagnostics)) };
  return { ok: true, inference: section as Inference };
}

export function readPolicyText(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why =
      code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'it is a directory' : (err as Error).message;
    throw policyErrorAt(path, `cannot read the policy file: ${why}`);
  }
}

/** Reads and validates a policy file; throws PolicyError (exit code 2) listing every problem. */
export function loadPolicyFile(path: string): Policy {
  const result = parsePolicy(readPolicyText(path), path);
  if (!result.ok) throw new PolicyError(result.diagnostics);
  return result.policy;
}

/** Reads and validates a preset file; throws PolicyError. */
export function loadPresetFile(path: string): Preset {
  const result = parsePreset(readPolicyText(path), path);
  if (!result.ok) throw new PolicyError(result.diagnostics);
  return result.preset;
}

/**
 * Validates a policy built in memory (no source text): the same checks as the loader, with
 * diagnostics that name the data path instead of a line. Returns the typed policy or throws.
 */
export function validatePolicy(data: unknown, file = '<policy>'): Policy {
  const issues = schemaAndSemanticIssues(data, 'policy');
  if (issues.length > 0) {
    throw new PolicyError(
      issues.map((i) => ({
        file,
        line: 0,
        col: 0,
        message: i.path.length > 0 ? `${formatPath(i.path)}: ${i.message}` : i.message,
      })),
    );
  }
  return data as Policy;
}
