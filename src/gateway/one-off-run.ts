/**
 * `carapace run`: one sandbox for one command, with no gateway. The same machinery the gateway
 * uses, embedded in this process; nothing outlives it (processes, cgroups, temporary workspace).
 */
import { accessSync, constants, existsSync } from 'node:fs';
import { isIP } from 'node:net';
import { join, resolve } from 'node:path';
import { FanoutAuditSink, finding, JsonlAuditLog, lifecycle, type AuditSink } from '../audit/index.js';
import { compilePolicy, loadPolicyFile, type Policy } from '../policy/index.js';
import { EgressProxy, type SandboxProxy } from '../proxy/index.js';
import { agentStarted, type InitEvent } from '../sandbox/launch.js';
import { nativeSplicePump, packageRoot } from '../sandbox/native-paths.js';
import { newSandboxName, sandboxPaths, startSandbox, type StartedSandbox } from '../sandbox/sandbox.js';
import { assertSandboxName } from '../sandbox/identity.js';
import { stateDirs } from '../sandbox/state-dirs.js';
import { PolicyWatch } from './policy-watch.js';
import { parseMount, RunInputError, specFromPolicy } from './sandbox-spec-from-policy.js';
import { egressNetwork } from './sandbox-network.js';

export interface RunOptions {
  policy?: string | undefined;
  workspace?: string | undefined;
  env: string[];
  mounts: string[];
  name?: string | undefined;
  audit?: string | undefined;
  bestEffortLimits: boolean;
  command: string[];
  /** Operator hosts map entries, `HOST=IP`. */
  resolve: string[];
  /** Operator-trusted host-local upstreams, `IP:PORT`. */
  allowLocal: string[];
  upstreamCa?: string | undefined;
  /** Names of credentials to take from this process's environment and bind per the policy. */
  credentials: string[];
}

export function defaultPolicyPath(): string {
  return join(packageRoot(), 'policies', 'default.yaml');
}

export async function runOneOff(opts: RunOptions): Promise<number> {
  // Every input is checked before anything is created, so bad input leaves nothing behind.
  if (opts.command.length === 0)
    throw new RunInputError('missing command: carapace run [options] -- CMD [ARGS…]');
  if (opts.name !== undefined) assertSandboxName(opts.name);
  for (const m of opts.mounts) {
    const { host } = parseMount(m);
    if (!existsSync(host)) throw new RunInputError(`--mount "${m}": ${host} does not exist`);
  }
  const hosts = parseResolve(opts.resolve);
  const credentials = credentialValues(opts.credentials);
  const upstreamCaFile = opts.upstreamCa ? readableFile(opts.upstreamCa, '--upstream-ca') : undefined;
  const policy: Policy = loadPolicyFile(opts.policy ?? defaultPolicyPath());
  const generation = compilePolicy(policy);
  const dirs = stateDirs();
  const name = opts.name ?? newSandboxName();
  const workspace = opts.workspace ? resolve(opts.workspace) : sandboxPaths(dirs, name).defaultWorkspace;
  const spec = specFromPolicy(policy, {
    name,
    workspace,
    env: opts.env,
    mounts: opts.mounts,
    command: opts.command,
  });

  const auditLog = opts.audit ? new JsonlAuditLog(resolve(opts.audit)) : null;
  const audit = new FanoutAuditSink(auditLog ? [auditLog] : []);
  const proxy = new EgressProxy({
    audit,
    hosts,
    allowLocal: opts.allowLocal,
    upstreamCaFile,
    splicePump: nativeSplicePump(),
  });
  let attached: SandboxProxy | null = null;
  let started: StartedSandbox;
  try {
    const abiOverride = process.env.CARAPACE_LANDLOCK_ABI_MAX;
    started = await startSandbox(spec, {
      dirs,
      ephemeral: opts.name === undefined,
      removeWorkspace: opts.workspace === undefined,
      bestEffortLimits: opts.bestEffortLimits,
      stdio: 'inherit',
      term: process.env.TERM,
      landlockAbiMax: abiOverride ? Number(abiOverride) : undefined,
      network: egressNetwork({
        proxy,
        runDir: dirs.run,
        generation,
        credentials,
        onAttached: (sb) => (attached = sb),
      }),
    });
  } catch (err) {
    await proxy.close();
    auditLog?.close();
    throw err;
  }

  const forward = (sig: NodeJS.Signals) => () => started.process.signal(sig);
  const handlers = (['SIGINT', 'SIGTERM', 'SIGHUP'] as const).map((sig) => [sig, forward(sig)] as const);
  for (const [sig, h] of handlers) process.on(sig, h);
  const watcher =
    opts.policy === undefined
      ? null
      : new PolicyWatch({
          file: resolve(opts.policy),
          sandbox: name,
          initial: policy,
          audit,
          apply: (next) => attached?.setGeneration(next),
          warn: (line) => process.stderr.write(`carapace: ${line}\n`),
        });
  try {
    audit.emit(
      lifecycle({
        sandbox: name,
        activity: 'start',
        message: `sandbox ${name} started: ${spec.command.join(' ')}`,
        details: {
          uid: started.identity.uid,
          limits: started.cgroup?.report,
          missing_paths: started.plan.missing,
        },
      }),
    );
    await agentStarted(started.process);
    reportEnforcement(name, started.process.events, audit);
    const { code } = await started.process.exited;
    audit.emit(
      lifecycle({
        sandbox: name,
        activity: 'stop',
        message: `sandbox ${name} exited with status ${code}`,
        details: { exit_code: code, oom_kills: started.cgroup?.oomKills() ?? 0 },
      }),
    );
    return code;
  } finally {
    for (const [sig, h] of handlers) process.off(sig, h);
    watcher?.close();
    await started.cleanup();
    await proxy.close();
    auditLog?.close();
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
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) {
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

/** Turns the init's status lines into audit events: what was enforced, and what the kernel lacked. */
function reportEnforcement(sandbox: string, events: InitEvent[], audit: AuditSink): void {
  for (const e of events) {
    if (e.event === 'landlock' || e.event === 'seccomp' || e.event === 'rlimits' || e.event === 'relay') {
      const { event, ...details } = e;
      audit.emit(
        lifecycle({
          sandbox,
          activity: 'update',
          message: `${event} applied`,
          details: { [event]: details },
        }),
      );
    }
    if (e.event === 'landlock' && Array.isArray(e.missing) && e.missing.length > 0) {
      audit.emit(
        finding({
          sandbox,
          kind: 'landlock-feature-missing',
          title: `Landlock features the kernel lacks: ${e.missing.join(', ')}`,
          severity: 'low',
          details: { missing: e.missing, abi: e.abi },
        }),
      );
    }
    if (e.event === 'error') {
      audit.emit(
        finding({
          sandbox,
          kind: 'sandbox-start-failed',
          title: `sandbox start failed at ${String(e.step)}: ${String(e.message)}`,
          details: { step: e.step, errno: e.errno },
        }),
      );
    }
  }
}
