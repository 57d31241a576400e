/**
 * blueprint.yaml text → a typed Blueprint, every problem reported at once as `file:line:col:
 * message` with the policy engine's YAML helpers (the same messages for the same mistakes), plus
 * the checks the schema cannot make: files it names exist in the blueprint, the base policy is a
 * valid policy, presets exist, a config file goes where the agent may write.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  conversionFailure,
  conversionIssues,
  findPreset,
  formatDiagnostic,
  issueToDiagnostic,
  issuesFromZod,
  parsePolicy,
  parseSource,
  sortDiagnostics,
  structuralIssues,
  type Diagnostic,
  type Policy,
  type PolicyIssue,
} from '../policy/index.js';
import { BlueprintError } from './errors.js';
import { BlueprintSchema, compareVersions, type Blueprint } from './schema.js';

export const MANIFEST = 'blueprint.yaml';

/** Parses blueprint.yaml of `dir`; diagnostics name `label` (what the user knows the file as). */
export function parseBlueprint(
  text: string,
  file: string,
): { ok: true; blueprint: Blueprint } | { ok: false; diagnostics: Diagnostic[] } {
  const { source, errors } = parseSource(text, file);
  const diagnostics = [...errors, ...conversionIssues(source), ...structuralIssues(source)];
  if (diagnostics.length > 0 || source.document.errors.length > 0)
    return { ok: false, diagnostics: sortDiagnostics(diagnostics) };
  let data: unknown;
  try {
    data = source.document.toJS({ maxAliasCount: 100 });
  } catch (err) {
    return { ok: false, diagnostics: [conversionFailure(source, err)] };
  }
  if (data === null || typeof data !== 'object' || Array.isArray(data)) {
    return {
      ok: false,
      diagnostics: [
        { file, line: 1, col: 1, message: 'a blueprint is a map of keys (name, version, agent, …)' },
      ],
    };
  }
  const result = BlueprintSchema.safeParse(data);
  if (!result.success) {
    // The policy engine's messages name the top level "the policy"; here it is the blueprint.
    const issues: PolicyIssue[] = result.error.issues
      .flatMap((i) => issuesFromZod(i, data, BlueprintSchema))
      .map((i) =>
        i.path.length === 1 ? { ...i, message: i.message.replace(' in the policy', ' in the blueprint') } : i,
      );
    return { ok: false, diagnostics: sortDiagnostics(issues.map((i) => issueToDiagnostic(source, i))) };
  }
  return { ok: true, blueprint: result.data };
}

/** What the schema cannot see: the blueprint's own files, its policy, presets, the paths. */
function crossChecks(dir: string, blueprint: Blueprint): PolicyIssue[] {
  const issues: PolicyIssue[] = [];
  const writable = ['/sandbox', '/tmp', ...blueprint.agent.writable];
  blueprint.agent.files.forEach((f, i) => {
    if (!existsSync(join(dir, f.source)))
      issues.push({
        path: ['agent', 'files', i, 'source'],
        message: `"${f.source}" is not a file of the blueprint; add it or fix the name`,
      });
    if (!writable.some((w) => f.path === w || f.path.startsWith(`${w}/`)))
      issues.push({
        path: ['agent', 'files', i, 'path'],
        message: `"${f.path}" is not under a writable path (${writable.join(', ')}); config files are written there before the first start`,
      });
  });
  if (blueprint.policy.base !== undefined && !existsSync(join(dir, blueprint.policy.base)))
    issues.push({
      path: ['policy', 'base'],
      message: `"${blueprint.policy.base}" is not a file of the blueprint; add it or fix the name`,
    });
  blueprint.policy.presets.forEach((name, i) => {
    try {
      findPreset(name);
    } catch {
      issues.push({
        path: ['policy', 'presets', i],
        message: `no built-in preset "${name}" (carapace policy presets lists them)`,
      });
    }
  });
  if (blueprint.agent.packages.length > 0 && blueprint.agent.runtime === undefined)
    issues.push({
      path: ['agent', 'packages'],
      message: 'npm packages need a runtime: add agent.runtime.node',
    });
  if (
    blueprint.health?.command === undefined &&
    blueprint.health?.url === undefined &&
    blueprint.health !== undefined
  )
    issues.push({ path: ['health'], message: 'a health check needs a command or a url' });
  return issues;
}

/** Reads and checks `dir/blueprint.yaml` and its base policy; throws BlueprintError listing every problem. */
export function loadBlueprintManifest(
  dir: string,
  label = dir,
): { blueprint: Blueprint; policy: Policy | null } {
  const file = join(label, MANIFEST);
  let text: string;
  try {
    text = readFileSync(join(dir, MANIFEST), 'utf8');
  } catch {
    throw new BlueprintError(
      'BLUEPRINT_INVALID',
      `${file}: no blueprint here (a blueprint is a directory with ${MANIFEST})`,
    );
  }
  const parsed = parseBlueprint(text, file);
  if (!parsed.ok) throw invalid(parsed.diagnostics);
  const { source } = parseSource(text, file);
  const cross = crossChecks(dir, parsed.blueprint).map((i) => issueToDiagnostic(source, i));
  let policy: Policy | null = null;
  const base = parsed.blueprint.policy.base;
  if (base !== undefined && existsSync(join(dir, base))) {
    const result = parsePolicy(readFileSync(join(dir, base), 'utf8'), join(label, base));
    if (result.ok) policy = result.policy;
    else cross.push(...result.diagnostics);
  }
  if (cross.length > 0) throw invalid(sortDiagnostics(cross));
  return { blueprint: parsed.blueprint, policy };
}

function invalid(diagnostics: Diagnostic[]): BlueprintError {
  return new BlueprintError('BLUEPRINT_INVALID', diagnostics.map(formatDiagnostic).join('\n'));
}

/** Refuses a blueprint that needs a newer Carapace than `running`. */
export function checkCarapaceVersion(blueprint: Blueprint, running: string): void {
  if (compareVersions(running, blueprint.min_carapace_version) < 0)
    throw new BlueprintError(
      'CARAPACE_TOO_OLD',
      `blueprint ${blueprint.name} ${blueprint.version} needs Carapace ${blueprint.min_carapace_version} or newer, not ${running}: upgrade Carapace (./install.sh)`,
    );
}
