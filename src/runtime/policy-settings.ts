/**
 * A policy's static sections as sandbox settings, and a cache of them keyed by the policy's text.
 *
 * Why a cache: loading the policy engine (yaml, zod and the schemas) costs a one-shot
 * `carapace run` several times what the sandbox itself costs (~80 ms against ~20 ms). A policy
 * that was validated once is not validated again: its settings are read back from
 * `<state>/policy-cache/<key>.json`. The key names the policy text and the code that judged it
 * (Carapace's version, and the policy engine's files by name, size and mtime); the entry holds
 * both in full and is used only when they are this run's exactly, so an edited policy, an upgrade
 * or a rebuild all miss, and the miss validates in full. The key is src/sandbox/keys.ts's, not a
 * SHA-256: hashing with Node's crypto would start OpenSSL (~5 ms) on a run that needs none of it.
 *
 * Security: the text compared is the text that is validated (it is read once). The cache is
 * in Carapace's own state directory (0700), entries are written whole (temporary file + rename),
 * and an entry that does not have the expected shape is ignored. It is worth what the state
 * directory is worth: whoever can write there can already change every sandbox's identity.
 */
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
import { contentKey } from '../sandbox/keys.js';
import { WORKSPACE_PATH } from '../sandbox/spec.js';
import type { SandboxSettings } from './sandbox-spec-from-policy.js';

const CACHE_FORMAT = 'carapace-policy-settings-2';
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

/** An entry: what was validated (the code's fingerprint and the policy text) and its settings. */
interface CacheEntry {
  source: string;
  settings: SandboxSettings;
}

function readEntry(file: string, source: string): SandboxSettings | null {
  let entry: Partial<CacheEntry>;
  try {
    entry = JSON.parse(readFileSync(file, 'utf8')) as Partial<CacheEntry>;
  } catch {
    return null;
  }
  if (entry.source !== source || typeof entry.settings !== 'object' || entry.settings === null) return null;
  const data: Partial<SandboxSettings> = entry.settings;
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

function writeEntry(dir: string, file: string, entry: CacheEntry): void {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const tmp = `${file}.${process.pid}`;
    writeFileSync(tmp, JSON.stringify(entry), { mode: 0o600 });
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
  const source = `${fingerprint()}\0${text}`;
  const file = join(dir, `${contentKey(source)}.json`);
  const cached = readEntry(file, source);
  if (cached !== null) return cached;
  const engine = await import('../policy/index.js');
  const result = engine.parsePolicy(text, path);
  if (!result.ok) throw new engine.PolicyError(result.diagnostics);
  const settings = settingsFromPolicy(result.policy, engine.resolveLimits(result.policy));
  writeEntry(dir, file, { source, settings });
  return settings;
}
