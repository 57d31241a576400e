/**
 * The network side of `carapace run --policy FILE`: the in-process egress proxy, the sandbox's
 * attachment to it, and the watch that applies saved policy changes live. Loaded only when a run
 * has a policy file (the built-in default policy has no network at all).
 */
import { accessSync, constants } from 'node:fs';
import { isIP } from 'node:net';
import { resolve } from 'node:path';
import type { AuditSink } from '../audit/index.js';
import { compilePolicy, resolveLimits, type Policy } from '../policy/index.js';
import { EgressProxy, type SandboxProxy } from '../proxy/index.js';
import { nativeTunnelPump } from '../sandbox/native-paths.js';
import type { NetworkProvider } from '../sandbox/sandbox.js';
import { PolicyWatch } from './policy-watch.js';
import { ENV_NAME, RunInputError } from './sandbox-spec-from-policy.js';
import { egressNetwork } from './sandbox-network.js';

export interface RunNetworkOptions {
  /** `HOST=IP` entries: the proxy's hosts map. */
  resolve: string[];
  /** `IP:PORT` upstreams the operator trusts although they are host-local. */
  allowLocal: string[];
  upstreamCa?: string | undefined;
  /** Names of environment variables passed as credentials. */
  credentials: string[];
}

/** The network inputs, checked before anything is created. */
export interface CheckedNetworkInput {
  hosts: Record<string, string>;
  allowLocal: string[];
  upstreamCaFile: string | undefined;
  credentials: Map<string, string>;
}

export function checkNetworkInput(opts: RunNetworkOptions): CheckedNetworkInput {
  return {
    hosts: parseResolve(opts.resolve),
    allowLocal: opts.allowLocal,
    upstreamCaFile: opts.upstreamCa ? readableFile(opts.upstreamCa, '--upstream-ca') : undefined,
    credentials: credentialValues(opts.credentials),
  };
}

export class RunNetwork {
  private readonly proxy: EgressProxy;
  private attached: SandboxProxy | null = null;
  private watcher: PolicyWatch | null = null;

  /** Attaches the sandbox to the proxy when it starts (see startSandbox's `network`). */
  readonly provider: NetworkProvider;

  constructor(
    input: CheckedNetworkInput,
    private readonly policy: Policy,
    private readonly audit: AuditSink,
    runDir: string,
  ) {
    this.proxy = new EgressProxy({
      audit,
      hosts: input.hosts,
      allowLocal: input.allowLocal,
      upstreamCaFile: input.upstreamCaFile,
      tunnelPump: nativeTunnelPump(),
    });
    this.provider = egressNetwork({
      proxy: this.proxy,
      generation: compilePolicy(policy),
      credentials: input.credentials,
      limits: resolveLimits(policy),
      onAttached: (sb) => (this.attached = sb),
      runDir,
    });
  }

  /** Applies saves of `file` to the running sandbox's network, live. */
  watch(file: string, sandbox: string, warn: (line: string) => void): void {
    this.watcher = new PolicyWatch({
      file,
      sandbox,
      initial: this.policy,
      audit: this.audit,
      apply: (next) => this.attached?.setGeneration(next),
      warn,
    });
  }

  async close(): Promise<void> {
    this.watcher?.close();
    await this.proxy.close();
  }
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

/** Credential values from this process's environment; the sandbox only ever sees placeholders. */
function credentialValues(names: string[]): Map<string, string> {
  const values = new Map<string, string>();
  for (const name of names) {
    if (!ENV_NAME.test(name)) {
      throw new RunInputError(`--credential "${name}": expected the name of an environment variable`);
    }
    const value = process.env[name];
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
