/**
 * A policy's static sections as sandbox settings, and a cache of them keyed by the policy's text.
 *
 * Why a cache: loading the policy engine (yaml, zod and the schemas) costs a one-shot
 * `carapace run` several times what the sandbox itself costs (~80 ms against ~20 ms). A policy
 * that was validated once is not validated again: its settings are read back from
 * `<state>/policy-cache/<key>.json`. The key is a SHA-256 of the policy text and of the code that
 * judged it (Carapace's version, and the policy engine's files by name, size and mtime), so an
 * edited policy, an upgrade or a rebuild all miss, and the miss validates in full.
 *
 * Security: the text that is hashed is the text that is validated (it is read once). The cache is
 * in Carapace's own state directory (0700), entries are written whole (temporary file + rename),
 * and an entry that does not have the expected shape is ignored. It is worth what the state
 * directory is worth: whoever can write there can already change every sandbox's identity.
 */
import { createHash } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Policy, ResolvedLimits } from '../policy/index.js';
import { WORKSPACE_PATH } from '../sandbox/spec.js';
import type { SandboxSettings } from './sandbox-spec-from-policy.js';

const CACHE_FORMAT = 'carapace-policy-settings-1';
/** Oldest entries beyond this many are removed when one is added. */
const CACHE_ENTRIES = 64;

/**
 * What a policy without `filesystem_policy` gets: OpenShell's own default for that case (its
 * restrictive default policy's filesystem), so that such a file runs here as it runs there.
 */
export const OPENSHELL_DEFAULT_FILESYSTEM = {
  include_workdir: true,
  read_only: ['/usr', '/lib', '/proc', '/dev/urandom', '/app', '/etc', '/var/log'],
  read_write: ['/sandbox', '/tmp', '/dev/null'],
};

/** The settings of a validated policy; `limits` is the policy engine's resolveLimits(policy). */
export function settingsFromPolicy(policy: Policy, limits: ResolvedLimits): SandboxSettings {
  const fs = policy.filesystem_policy ?? OPENSHELL_DEFAULT_FILESYSTEM;
  const readWrite = [...(fs.read_write ?? [])];
  if (fs.include_workdir && !readWrite.includes(WORKSPACE_PATH)) readWrite.push(WORKSPACE_PATH);
  const readOnly = (fs.read_only ?? []).filter((p) => !readWrite.includes(p));
  if (!readWrite.includes(WORKSPACE_PATH) && !readOnly.includes(WORKSPACE_PATH))
    readOnly.push(WORKSPACE_PATH);
  return {
    readOnly,
    readWrite,
    landlock: policy.landlock?.compatibility ?? 'best_effort',
    limits: { ...limits },
    listenPorts: [...(policy.listen_ports ?? [])],
  };
}

let codeFingerprint: string | undefined;

/**
 * Name, size and mtime of every file of the policy engine and of this module. Bundled (dist/cli/,
 * scripts/build-cli.ts), the engine has no directory of its own: every build rewrites the chunks,
 * this module's among them, so its own mtime stands for the engine's.
 */
function fingerprint(): string {
  if (codeFingerprint !== undefined) return codeFingerprint;
  const here = fileURLToPath(import.meta.url);
  const engine = join(dirname(here), '..', 'policy');
  const parts = [CACHE_FORMAT, here, String(statSync(here).mtimeMs)];
  for (const f of existsSync(engine) ? readdirSync(engine).sort() : []) {
    const st = statSync(join(engine, f));
    parts.push(`${f}:${st.size}:${st.mtimeMs}`);
  }
  codeFingerprint = parts.join('\n');
  return codeFingerprint;
}

const isStrings = (v: unknown): v is string[] => Array.isArray(v) && v.every((x) => typeof x === 'string');
const isNumberOrAbsent = (v: unknown) => v === undefined || (typeof v === 'number' && Number.isFinite(v));

function readEntry(file: string): SandboxSettings | null {
  let data: Partial<SandboxSettings>;
  try {
    data = JSON.parse(readFileSync(file, 'utf8')) as Partial<SandboxSettings>;
  } catch {
    return null;
  }
  const limits = data.limits as Record<string, unknown> | undefined;
  const ok =
    isStrings(data.readOnly) &&
    isStrings(data.readWrite) &&
    (data.landlock === 'best_effort' || data.landlock === 'hard_requirement') &&
    Array.isArray(data.listenPorts) &&
    data.listenPorts.every((p) => Number.isInteger(p)) &&
    typeof limits === 'object' &&
    limits !== null &&
    ['memoryBytes', 'pids', 'cpuMillis', 'openFiles'].every((k) => isNumberOrAbsent(limits[k]));
  return ok ? (data as SandboxSettings) : null;
}

function writeEntry(dir: string, file: string, settings: SandboxSettings): void {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const tmp = `${file}.${process.pid}`;
    writeFileSync(tmp, JSON.stringify(settings), { mode: 0o600 });
    renameSync(tmp, file);
    const entries = readdirSync(dir)
      .filter((f) => f.endsWith('.json'))
      .map((f) => ({ f, t: statSync(join(dir, f)).mtimeMs }))
      .sort((a, b) => b.t - a.t);
    for (const { f } of entries.slice(CACHE_ENTRIES)) unlinkSync(join(dir, f));
  } catch {
    // A cache that cannot be written only costs the next run the full validation.
  }
}

/**
 * The sandbox settings of the policy file at `path`: from the cache in `stateDir` when this exact
 * text was validated by this exact code before, else by loading the policy engine and validating
 * (which throws its PolicyError, with every diagnostic, for a bad policy).
 */
export async function loadSandboxSettings(path: string, stateDir: string): Promise<SandboxSettings> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    const engine = await import('../policy/index.js');
    engine.readPolicyText(path); // throws the engine's PolicyError, which says why
    throw new Error(`cannot read ${path}`);
  }
  const dir = join(stateDir, 'policy-cache');
  const key = createHash('sha256').update(fingerprint()).update('\0').update(text).digest('hex');
  const file = join(dir, `${key}.json`);
  const cached = readEntry(file);
  if (cached !== null) return cached;
  const engine = await import('../policy/index.js');
  const result = engine.parsePolicy(text, path);
  if (!result.ok) throw new engine.PolicyError(result.diagnostics);
  const settings = settingsFromPolicy(result.policy, engine.resolveLimits(result.policy));
  writeEntry(dir, file, settings);
  return settings;
}
