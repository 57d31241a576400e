/**
 * The policy engine: the only entry point other folders import (docs/architecture.md).
 * `policy/` imports nothing else of ours.
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
} from './loader.js';
export { compilePolicy } from './compile.js';
export type {
  PolicyGeneration,
  ConnectQuery,
  RequestQuery,
  ConnectDecision,
  RequestDecision,
  EndpointView,
} from './decisions.js';
export type { RuleView, QueryInput } from './request-rules.js';
export { canonicalRequestPath } from './request-rules.js';
export { METHOD_PATTERN, KNOWN_METHODS, methodProblem } from './http-methods.js';
export { readStoredPolicyText, type StoredTextReading } from './stored-text.js';
export type { BinaryMatch } from './binary-matcher.js';
export { resolveLimits, parseMemoryBytes, parseCpuMillis, type ResolvedLimits } from './limits.js';
export {
  changedSections,
  STATIC_SECTIONS,
  DYNAMIC_SECTIONS,
  type SectionChanges,
  type StaticSection,
  type DynamicSection,
} from './sections.js';
export { diffPolicies, formatChanges, type PolicyChange } from './diff.js';
export {
  builtinPoliciesDir,
  listPresets,
  findPreset,
  loadBuiltinPreset,
  mergePreset,
  removePreset,
  type PresetSummary,
  type PresetMergeOptions,
} from './presets.js';
export {
  applyPolicyOperations,
  generatedPolicyKey,
  type PolicyOperation,
  type PolicyEditResult,
} from './operations.js';
export {
  parseEndpointSpec,
  parseHostPortSpec,
  parseRuleSpec,
  type EndpointSpec,
  type HostPortSpec,
  type RuleSpec,
} from './op-specs.js';
export { PolicySchema, PresetSchema } from './schema.js';
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
} from './schema.js';
export type {
  Limits,
  Inference,
  InferenceRoute,
  InferenceBudget,
  PrivacyRule,
  BuiltinDetector,
} from './schema-extensions.js';
export { BUILTIN_DETECTORS } from './schema-extensions.js';
export {
  PROVIDER_TYPES,
  PROVIDER_NAME,
  parseDurationMs,
  linearPatternProblem,
  type ProviderType,
} from './inference-checks.js';
export { compileLinearPattern, type LinearPattern } from './linear-pattern.js';
// The YAML location helpers, for other YAML formats that report `file:line:col` as policies do
// (blueprints: src/blueprint/manifest.ts).
export {
  parseSource,
  structuralIssues,
  conversionIssues,
  conversionFailure,
  issueToDiagnostic,
  type SourceDocument,
} from './yaml-source.js';
export { issuesFromZod } from './schema-issues.js';
export { sortDiagnostics, type PolicyIssue } from './diagnostics.js';
