/** Turns a parsed policy plus the command line into a SandboxSpec. */
import { isAbsolute, resolve } from 'node:path';
import { resolveLimits, type Policy } from '../policy/index.js';
import type { HostMount, SandboxSpec } from '../sandbox/spec.js';
import { WORKSPACE_PATH } from '../sandbox/spec.js';

export class RunInputError extends Error {
  override name = 'RunInputError';
  readonly exitCode = 2;
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

export function specFromPolicy(policy: Policy, input: SpecInput): SandboxSpec {
  const fs = policy.filesystem_policy ?? {};
  const readWrite = [...(fs.read_write ?? [])];
  if (fs.include_workdir && !readWrite.includes(WORKSPACE_PATH)) readWrite.push(WORKSPACE_PATH);
  const readOnly = (fs.read_only ?? []).filter((p) => !readWrite.includes(p));
  if (!readWrite.includes(WORKSPACE_PATH) && !readOnly.includes(WORKSPACE_PATH))
    readOnly.push(WORKSPACE_PATH);
  return {
    name: input.name,
    workspace: input.workspace,
    readOnly,
    readWrite,
    landlock: policy.landlock?.compatibility ?? 'best_effort',
    limits: resolveLimits(policy),
    listenPorts: policy.listen_ports ?? [],
    mounts: input.mounts.map(parseMount),
    env: { ...parseEnv(input.env), ...input.extraEnv },
    files: input.files ?? [],
    command: input.command,
  };
}

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

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
  return { host: resolve(host), path, readOnly: mode === 'ro' };
}
