/** What a sandbox is made of, already resolved from the policy and the command line. */
import type { ResourceLimits } from './cgroup/cgroup.js';

export interface HostMount {
  /** Absolute host path. */
  host: string;
  /** Absolute path inside the sandbox. */
  path: string;
  readOnly: boolean;
}

export interface SandboxSpec {
  /**
   * The key of everything the sandbox has on the host (state and runtime directories, lock,
   * cgroups, uid record, proxy socket): an opaque id the gateway assigns. A one-off run has none,
   * and its name is the key.
   */
  id?: string | undefined;
  /** Sandbox name: the owner's label for it, and its hostname. */
  name: string;
  /** Host directory mounted at /sandbox, the persistent workspace. */
  workspace: string;
  /** Paths from the policy's filesystem_policy (after include_workdir is applied). */
  readOnly: string[];
  readWrite: string[];
  landlock: 'best_effort' | 'hard_requirement';
  limits: ResourceLimits;
  /** TCP ports the agent may bind inside (Landlock ABI ≥ 4). */
  listenPorts: number[];
  /** Explicit host directories or files mapped in by the user (--mount). */
  mounts: HostMount[];
  /** The agent's environment, added to the base environment (HOME, PATH, LANG, …). */
  env: Record<string, string>;
  /** Files written for this sandbox and bound read-only inside (e.g. the CA bundle). */
  files: { path: string; content: string }[];
  /** The command and its arguments. */
  command: string[];
}

export const WORKSPACE_PATH = '/sandbox';
export const INIT_PATH = '/.carapace/init';
export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** The environment every agent starts with; nothing from the caller's environment leaks in. */
export function baseEnvironment(
  spec: Pick<SandboxSpec, 'env'>,
  term: string | undefined,
): Record<string, string> {
  return {
    HOME: WORKSPACE_PATH,
    PATH: DEFAULT_PATH,
    LANG: 'C.UTF-8',
    USER: 'sandbox',
    LOGNAME: 'sandbox',
    SHELL: '/bin/sh',
    ...(term ? { TERM: term } : {}),
    ...spec.env,
  };
}
