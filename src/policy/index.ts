/**
 * The policy engine: the only entry point other folders import (docs/architecture.md).
 * `policy/` imports nothing else of ours. Inside, each folder imports only those before it:
 * schema/ (the format) and patterns/ (globs, host wildcards, IP ranges, linear patterns), then
 * load/ (text → typed policy with every problem's position), compile/ (policy → generation and
 * decisions), edit/ (operations, presets, diffs).
 */
export { PolicyError, formatDiagnostic, type Diagnostic } from './diagnostics.js';
export {
  parsePolicy,
  parsePreset,
  parsePolicyOrPreset,
  parseInferenceSection,
  loadPolicyFile,
  loadPresetFile,
  readPolicyText,
  validatePolicy,
  type ParseResult,
  type PresetParseResult,
  type AnyParseResult,
  type InferenceParseResult,
} from './load/loader.js';
export { compilePolicy } from './compile/compile.js';
export type {
  PolicyGeneration,
  ConnectQuery,
  RequestQuery,
  ConnectDecision,
  RequestDecision,
  EndpointView,
} from './compile/decisions.js';
export type { RuleView, QueryInput } from './compile/request-rules.js';
export { canonicalRequestPath } from './compile/request-rules.js';
export { METHOD_PATTERN, KNOWN_METHODS, methodProblem } from './load/http-methods.js';
export { readStoredPolicyText, type StoredTextReading } from './load/stored-text.js';
export type { BinaryMatch } from './compile/binary-matcher.js';
export { resolveLimits, parseMemoryBytes, parseCpuMillis, type ResolvedLimits } from './schema/limits.js';
export {
  changedSections,
  STATIC_SECTIONS,
  DYNAMIC_SECTIONS,
  type SectionChanges,
  type StaticSection,
  type DynamicSection,
} from './edit/sections.js';
export { diffPolicies, formatChanges, type PolicyChange } from './edit/diff.js';
export {
  builtinPoliciesDir,
  listPresets,
  findPreset,
  UnknownPresetError,
  loadBuiltinPreset,
  mergePreset,
  removePreset,
  type PresetSummary,
  type PresetMergeOptions,
} from './edit/presets.js';
export {
  applyPolicyOperations,
  generatedPolicyKey,
  type PolicyOperation,
  type PolicyEditResult,
} from './edit/operations.js';
export {
  parseEndpointSpec,
  parseHostPortSpec,
  parseRuleSpec,
  type EndpointSpec,
  type HostPortSpec,
  type RuleSpec,
} from './edit/op-specs.js';
export { PolicySchema, PresetSchema } from './schema/schema.js';
export type {
  Policy,
  Preset,
  NetworkPolicy,
  Endpoint,
  AllowRule,
  DenyRule,
  QueryMatcher,
  Binary,
  FilesystemPolicy,
  Access,
  Enforcement,
  Protocol,
} from './schema/schema.js';
export type {
  Limits,
  Inference,
  InferenceRoute,
  InferenceBudget,
  PrivacyRule,
  BuiltinDetector,
} from './schema/schema-extensions.js';
export { BUILTIN_DETECTORS } from './schema/schema-extensions.js';
export {
  PROVIDER_TYPES,
  PROVIDER_NAME,
  parseDurationMs,
  linearPatternProblem,
  type ProviderType,
} from './load/inference-checks.js';
export { compileLinearPattern, type LinearPattern } from './patterns/linear-pattern.js';
// The YAML location helpers, for other YAML formats that report `file:line:col` as policies do
// (blueprints: src/blueprint/manifest.ts).
export {
  parseSource,
  structuralIssues,
  conversionIssues,
  conversionFailure,
  issueToDiagnostic,
  type SourceDocument,
} from './load/yaml-source.js';
export { closest, issuesFromZod } from './load/schema-issues.js';
export { sortDiagnostics, type PolicyIssue } from './diagnostics.js';
