/**
 * Turns a policy's sandbox settings plus the command line into a SandboxSpec. The settings are
 * plain data (policy-settings.ts makes them from a policy, or reads them back from its cache), so
 * this file does not load the policy engine.
 */
import { isAbsolute, resolve } from 'node:path';
import type { ResourceLimits } from '../sandbox/cgroup.js';
import type { HostMount, SandboxSpec } from '../sandbox/spec.js';

export class RunInputError extends Error {
  override name = 'RunInputError';
  readonly exitCode = 2;
}

/** What a policy's static sections say about a sandbox, in the sandbox layer's terms. */
export interface SandboxSettings {
  /** filesystem_policy, with include_workdir applied and /sandbox always present. */
  readOnly: string[];
  readWrite: string[];
  landlock: 'best_effort' | 'hard_requirement';
  limits: ResourceLimits;
  listenPorts: number[];
}

export interface SpecInput {
  name: string;
  workspace: string;
  env: string[];
  mounts: string[];
  command: string[];
  files?: { path: string; content: string }[];
  extraEnv?: Record<string, string>;
}

export function specFromSettings(settings: SandboxSettings, input: SpecInput): SandboxSpec {
  return {
    name: input.name,
    workspace: input.workspace,
    readOnly: [...settings.readOnly],
    readWrite: [...settings.readWrite],
    landlock: settings.landlock,
    limits: { ...settings.limits },
    listenPorts: [...settings.listenPorts],
    mounts: input.mounts.map(parseMount),
    env: { ...parseEnv(input.env), ...input.extraEnv },
    files: input.files ?? [],
    command: input.command,
  };
}

export const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

export function parseEnv(pairs: string[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const pair of pairs) {
    const eq = pair.indexOf('=');
    const name = eq < 0 ? pair : pair.slice(0, eq);
    if (eq < 0 || !ENV_NAME.test(name)) {
      throw new RunInputError(
        `--env "${pair}": expected NAME=VALUE with NAME made of letters, digits and '_'`,
      );
    }
    env[name] = pair.slice(eq + 1);
  }
  return env;
}

export function parseMount(text: string): HostMount {
  const parts = text.split(':');
  const [host, path, mode] = parts;
  if (
    parts.length < 2 ||
    parts.length > 3 ||
    !host ||
    !path ||
    (mode !== undefined && mode !== 'ro' && mode !== 'rw')
  ) {
    throw new RunInputError(`--mount "${text}": expected HOST:PATH or HOST:PATH:ro`);
  }
  if (!isAbsolute(path) || path.split('/').includes('..')) {
    throw new RunInputError(`--mount "${text}": the sandbox path must be absolute, without '..'`);
  }
  if (path === '/' || path === '/proc' || path.startsWith('/proc/')) {
    throw new RunInputError(`--mount "${text}": cannot mount over ${path}`);
  }
  // Whatever a sandbox may write, the host never trusts again (writable-trees.ts): the whole host.
  if (mode !== 'ro' && resolve(host) === '/') {
    throw new RunInputError(`--mount "${text}": the host's root can only be mapped read-only (add :ro)`);
  }
  return { host: resolve(host), path, readOnly: mode === 'ro' };
}
