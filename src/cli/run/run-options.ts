/**
 * The command line of `carapace run` (and, later, of `sandbox create`) turned into the runtime's
 * typed input: `--env`, `--mount`, `--resolve`, credentials read from this process's environment,
 * files checked for reading. Everything the runtime needs from the environment is read here, at
 * the entry point, and passed in; nothing below reads `process.env`.
 */
import { accessSync, constants } from 'node:fs';
import { isIP } from 'node:net';
import { isAbsolute, resolve } from 'node:path';
import type { RunHost, RunRequest } from '../../runtime/one-off-run.js';
import type { NetworkInput } from '../../runtime/run-network.js';
import { ENV_NAME, RunInputError } from '../../runtime/sandbox-spec-from-policy.js';
import type { HostMount } from '../../sandbox/spec.js';
import { assertSandboxName } from '../../sandbox/identity/identity.js';
import { stateDirs } from '../../sandbox/state-dirs.js';
import { parseEnv } from './run-env.js';

export { parseEnv };
import { storedProviders } from './run-providers.js';

/** What the command line says, as written. */
export interface RunArgs {
  policy?: string | undefined;
  workspace?: string | undefined;
  env: string[];
  mounts: string[];
  name?: string | undefined;
  audit?: string | undefined;
  bestEffortLimits: boolean;
  command: string[];
  resolve: string[];
  allowLocal: string[];
  upstreamCa?: string | undefined;
  credentials: string[];
  /** Let a running gateway serve the run when it can (false: --no-gateway). */
  gateway: boolean;
}

export function runRequest(args: RunArgs, env: NodeJS.ProcessEnv = process.env): RunRequest {
  if (args.command.length === 0)
    throw new RunInputError('missing command: carapace run [options] -- CMD [ARGS…]');
  const networkOption = [
    ['--resolve', args.resolve.length > 0],
    ['--allow-local', args.allowLocal.length > 0],
    ['--upstream-ca', args.upstreamCa !== undefined],
    ['--credential', args.credentials.length > 0],
  ].find(([, given]) => given)?.[0];
  if (args.policy === undefined && networkOption) {
    throw new RunInputError(
      `${networkOption} needs --policy: the built-in default policy has no network (give a policy that allows hosts)`,
    );
  }
  if (args.name !== undefined) checkNameOption(args.name);
  return {
    policy: args.policy,
    workspace: args.workspace === undefined ? undefined : resolve(args.workspace),
    env: parseEnv(args.env),
    mounts: args.mounts.map(parseMount),
    name: args.name,
    audit: args.audit === undefined ? undefined : resolve(args.audit),
    bestEffortLimits: args.bestEffortLimits,
    command: args.command,
    network: networkInput(args, env),
  };
}

/** The host-side settings of a run, from this process's environment. */
/** `--name` of a run or a `sandbox create`: one line naming the option, before anything starts. */
export function checkNameOption(name: string): void {
  try {
    assertSandboxName(name);
  } catch {
    throw new RunInputError(
      `--name ${JSON.stringify(name)}: use 1-63 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit`,
    );
  }
}

export function runHost(env: NodeJS.ProcessEnv = process.env): RunHost {
  const abi = env.CARAPACE_LANDLOCK_ABI_MAX;
  return {
    dirs: stateDirs(env),
    uidBase: env.CARAPACE_UID_BASE ? Number(env.CARAPACE_UID_BASE) : undefined,
    term: env.TERM,
    landlockAbiMax: abi ? Number(abi) : undefined,
    // Tests of another host layout (docs/testing.md): the root the sandbox mirrors instead of /.
    hostRoot: env.CARAPACE_HOST_ROOT || undefined,
  };
}

function networkInput(args: RunArgs, env: NodeJS.ProcessEnv): NetworkInput {
  return {
    hosts: parseResolve(args.resolve),
    allowLocal: parseAllowLocal(args.allowLocal),
    upstreamCaFile: args.upstreamCa ? readableFile(args.upstreamCa, '--upstream-ca') : undefined,
    credentials: credentialValues(args.credentials, env),
    providers: storedProviders(stateDirs(env), process.getuid?.() ?? 0),
  };
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

/** `--resolve HOST=IP` entries as the proxy's hosts map. */
export function parseResolve(entries: string[]): Record<string, string> {
  const hosts: Record<string, string> = {};
  for (const entry of entries) {
    const eq = entry.indexOf('=');
    const host = entry.slice(0, eq).trim().toLowerCase().replace(/\.$/, '');
    const ip = entry
      .slice(eq + 1)
      .trim()
      .replace(/^\[(.*)\]$/, '$1');
    if (eq <= 0 || !host || isIP(ip) === 0) {
      throw new RunInputError(`--resolve "${entry}": expected HOST=IP, e.g. api.example.com=127.0.0.1`);
    }
    hosts[host] = ip;
  }
  return hosts;
}

/**
 * `--allow-local IP:PORT` entries, checked here so that a typo is one line naming the option (the
 * proxy's address guard checks them again when it is made).
 */
export function parseAllowLocal(entries: string[]): string[] {
  for (const entry of entries) {
    const m = /^\[([^\]]+)\]:(\d{1,5})$/.exec(entry) ?? /^([^:[\]]+):(\d{1,5})$/.exec(entry);
    const port = m ? Number(m[2]) : 0;
    if (!m || isIP(m[1]!) === 0 || port < 1 || port > 65535) {
      throw new RunInputError(
        `--allow-local "${entry}": expected IP:PORT or [IPv6]:PORT, e.g. 127.0.0.1:11434`,
      );
    }
  }
  return entries;
}

/** Credential values from this process's environment; the sandbox only ever sees placeholders. */
function credentialValues(names: string[], env: NodeJS.ProcessEnv): Map<string, string> {
  const values = new Map<string, string>();
  for (const name of names) {
    if (!ENV_NAME.test(name)) {
      throw new RunInputError(`--credential "${name}": expected the name of an environment variable`);
    }
    const value = env[name];
    if (value === undefined || value === '') {
      throw new RunInputError(
        `--credential ${name}: the environment variable ${name} is not set (export it first)`,
      );
    }
    values.set(name, value);
  }
  return values;
}

function readableFile(path: string, option: string): string {
  try {
    accessSync(path, constants.R_OK);
  } catch {
    throw new RunInputError(`${option} ${path}: cannot read that file`);
  }
  return resolve(path);
}
