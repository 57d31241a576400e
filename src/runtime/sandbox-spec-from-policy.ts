/**
 * Turns a policy's sandbox settings plus the command line into a SandboxSpec. The settings are
 * plain data (policy-settings.ts makes them from a policy, or reads them back from its cache), so
 * this file does not load the policy engine.
 */
import type { ResourceLimits } from '../sandbox/cgroup/cgroup.js';
import type { HostMount, SandboxSpec } from '../sandbox/spec.js';

/** Input a user can correct (a malformed option, a file in the wrong place): exit 2, API 400. */
export class RunInputError extends Error {
  override name = 'RunInputError';
  readonly code: string = 'INVALID_INPUT';
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
  env: Record<string, string>;
  mounts: HostMount[];
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
    mounts: input.mounts,
    env: { ...input.env, ...input.extraEnv },
    files: input.files ?? [],
    command: input.command,
  };
}

export const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
