/**
 * `carapace run`: one sandbox for one command, with no gateway. The same machinery the gateway
 * uses, embedded in this process; nothing outlives it (processes, cgroups, temporary workspace).
 */
import { join, resolve } from 'node:path';
import type { AuditSink, OcsfEvent } from '../audit/index.js';
import { SandboxStartError } from '../sandbox/launch/launch.js';
import { agentStarted, startFailure, type InitEvent } from '../sandbox/launch/running-sandbox.js';
import type { SandboxTrees } from '../sandbox/host-paths/host-path.js';
import { directConnectEvent, parseDirectConnect } from './direct-connect-audit.js';
import { packageRoot } from '../sandbox/native-paths.js';
import { newSandboxName, sandboxPaths, type StartedSandbox } from '../sandbox/sandbox.js';
import type { EgressProxy } from '../proxy/index.js';
import type { InferenceRouter } from '../router/index.js';
import { BubblewrapDriver, type BubblewrapSandbox } from './bubblewrap-driver.js';
import { Runtime } from './runtime.js';
import { assertSandboxName, hostIdentities } from '../sandbox/identity/identity.js';
import type { StateDirs } from '../sandbox/state-dirs.js';
import { sweepDeadRuns, type LostRun } from '../sandbox/sweep.js';
import { WritableTreeRegistry } from '../sandbox/host-paths/writable-trees.js';
import type { NetworkInput, RunNetwork } from './run-network.js';
import type { HostMount } from '../sandbox/spec.js';
import { loadSandboxSettings, settingsFromPolicy } from './policy-settings.js';
import { openAuditFile, readPolicyText, runTrees, SandboxWritableFileError } from './run-files.js';
import { RunInputError, specFromSettings, type SandboxSettings } from './sandbox-spec-from-policy.js';
import { printable } from '../policy/printable.js';

/**
 * The one line a run of the default policy gets when its limits could not all have a cgroup
 * (`skipped`: the cgroup report's, "CONTROLLER: why"): what holds instead, and where to look.
 * Said by a run in its own process and, as a STDERR frame, by a gateway's run (one-off-runs.ts).
 */
export function skippedLimitsWarning(skipped: readonly string[]): string {
  const instead: string[] = [];
  if (skipped.some((s) => s.startsWith('pids:')))
    instead.push("RLIMIT_NPROC caps the sandbox's processes instead");
  if (skipped.some((s) => s.startsWith('memory:'))) instead.push('its memory is not limited');
  if (skipped.some((s) => s.startsWith('cpu:'))) instead.push('its CPU is not limited');
  return (
    `warning: no cgroup for the default policy's limits (${skipped.join('; ')}); ` +
    `${instead.join('; ')} (carapace doctor says how to get cgroups)`
  );
}

/**
 * One line on stderr, `carapace: …`, escaped (src/policy/printable.ts): what this file says quotes
 * text it did not write (a policy file's path and route names, a save refused with the file's
 * position, the router's and the watch's errors, names and paths a swept run left), which may
 * carry control and bidi characters. The sandbox's own output is not this: it is inherited.
 */
function say(line: string): void {
  process.stderr.write(`carapace: ${printable(line)}\n`);
}

/** A one-off run, as the CLI parsed it (src/cli/run/run-options.ts): nothing here is read again. */
export interface RunRequest {
  /** The policy file; without one, the built-in default policy (no network). */
  policy?: string | undefined;
  /** Absolute; without one, a temporary workspace. */
  workspace?: string | undefined;
  env: Record<string, string>;
  mounts: HostMount[];
  name?: string | undefined;
  /** Absolute path of the audit file. */
  audit?: string | undefined;
  bestEffortLimits: boolean;
  command: string[];
  /** Used with a policy file (the default policy has no network). */
  network: NetworkInput;
}

/** The host-side settings of a run, read by the entry point from its environment. */
export interface RunHost {
  dirs: StateDirs;
  /** First uid of the host's sandbox uid range, when not the default. */
  uidBase?: number | undefined;
  /** The caller's TERM, passed to the agent. */
  term?: string | undefined;
  /** Cap on the Landlock ABI (simulates an older kernel; tests). */
  landlockAbiMax?: number | undefined;
  /** The root the sandbox mirrors instead of / (tests of another host layout). */
  hostRoot?: string | undefined;
}

type AuditModule = typeof import('../audit/index.js');

/** Where a run's audit events go: to --audit's file, or nowhere (the audit module stays unloaded). */
interface RunAudit {
  emit(make: (audit: AuditModule) => OcsfEvent): void;
  /** The same destination as an AuditSink, for the proxy. */
  sink: AuditSink;
  close(): void;
}

async function openRunAudit(path: string | undefined, trees: SandboxTrees): Promise<RunAudit> {
  if (path === undefined) return { emit: () => {}, sink: { emit: () => {} }, close: () => {} };
  const fd = openAuditFile(path, trees);
  const audit = await import('../audit/index.js');
  const log = new audit.JsonlAuditLog(resolve(path), fd);
  return { emit: (make) => log.emit(make(audit)), sink: log, close: () => log.close() };
}

export function defaultPolicyPath(): string {
  return join(packageRoot(), 'policies', 'default.yaml');
}

/**
 * The run's sandbox settings, and its network when it has one. The built-in default policy has no
 * network: its settings come from the policy cache and neither the policy engine nor the proxy is
 * loaded. A policy file may allow hosts, now or after a save: it is loaded whole and gets the proxy.
 */
async function loadRunPolicy(
  opts: RunRequest,
  dirs: StateDirs,
  trees: SandboxTrees,
): Promise<{
  settings: SandboxSettings;
  network?: (proxy: EgressProxy, audit: AuditSink) => RunNetwork;
  router?: (audit: AuditSink) => InferenceRouter;
}> {
  if (opts.policy === undefined) {
    return { settings: await loadSandboxSettings(defaultPolicyPath(), dirs.state) };
  }
  const [engine, runNetwork] = await Promise.all([import('../policy/index.js'), import('./run-network.js')]);
  const text = readPolicyText(opts.policy, trees);
  if (text === null) engine.readPolicyText(opts.policy); // throws the engine's error, which says why
  const parsed = engine.parsePolicy(text ?? '', opts.policy);
  if (!parsed.ok) throw new engine.PolicyError(parsed.diagnostics);
  const policy = parsed.policy;
  // An inline route whose key was not passed starts fine and answers every call 503, which the
  // SDKs retry: said once, here, where the user can still add the --credential.
  for (const [route, r] of Object.entries(policy.inference?.routes ?? {})) {
    const key = r.endpoint !== undefined ? r.credential_env : undefined;
    if (key !== undefined && !opts.network.credentials.has(key))
      say(
        `warning: inference route ${route} takes its key from ${key}, which this run was not given: ` +
          `every call to it fails (pass --credential ${key})`,
      );
  }
  return {
    settings: settingsFromPolicy(policy, engine.resolveLimits(policy)),
    network: (proxy, audit) =>
      new runNetwork.RunNetwork(proxy, opts.network.credentials, policy, audit, dirs.run),
    // inference.local: every run with a policy file has it (a save may add routes later).
    router: (audit) => runNetwork.runRouter(audit, opts.network, say),
  };
}

export async function runOneOff(opts: RunRequest, host: RunHost): Promise<number> {
  if (opts.command.length === 0)
    throw new RunInputError('missing command: carapace run [options] -- CMD [ARGS…]');
  if (opts.name !== undefined) assertSandboxName(opts.name);
  const dirs = host.dirs;
  const identities = hostIdentities(host.uidBase);
  await reportLostRuns(await sweepDeadRuns(dirs, identities), dirs);
  const name = opts.name ?? newSandboxName();
  const workspace = opts.workspace ?? sandboxPaths(dirs, name).defaultWorkspace;
  // Policy and audit files must lie outside every tree a sandbox writes, this run's included.
  const trees = runTrees(dirs, workspace, opts.mounts);
  // The audit first: a policy file refused for where it lies is a finding on the record.
  const audit = await openRunAudit(opts.audit, trees);
  let loaded: Awaited<ReturnType<typeof loadRunPolicy>>;
  try {
    loaded = await loadRunPolicy(opts, dirs, trees);
  } catch (err) {
    if (err instanceof SandboxWritableFileError) {
      audit.emit((a) =>
        a.finding({
          sandbox: name,
          kind: 'policy-file-refused',
          title: err.message,
          details: { policy: err.path, tree: err.tree },
        }),
      );
    }
    audit.close();
    throw err;
  }
  const { settings, network: makeNetwork, router: makeRouter } = loaded;
  const spec = specFromSettings(settings, {
    name,
    workspace,
    env: opts.env,
    mounts: opts.mounts,
    command: opts.command,
  });

  // A runtime with one sandbox: the proxy (when the policy has a network) and the sandbox.
  const router = makeRouter ? makeRouter(audit.sink) : null;
  const runtime = new Runtime({
    driver: new BubblewrapDriver({ dirs, identities }),
    audit: audit.sink,
    proxy: opts.network,
    internalHosts: router ? [router.internalHost] : undefined,
  });
  const network = makeNetwork ? makeNetwork(await runtime.proxy(), audit.sink) : null;
  let started: StartedSandbox;
  try {
    const run = await runtime.start({
      spec,
      ownerUid: process.getuid?.() ?? 0,
      auditFile: opts.audit,
      ephemeral: opts.name === undefined,
      removeWorkspace: opts.workspace === undefined,
      // The built-in default policy must start everywhere: where no cgroup can be had (a normal
      // user without a delegated subtree), its limits fall back to the rlimits the init sets
      // anyway. Limits a user wrote into their own policy still refuse without the flag.
      bestEffortLimits: opts.bestEffortLimits || opts.policy === undefined,
      stdio: 'inherit',
      term: host.term,
      landlockAbiMax: host.landlockAbiMax,
      network: network?.provider,
      hostRoot: host.hostRoot,
    });
    started = (run.started as BubblewrapSandbox).started;
  } catch (err) {
    // A start Carapace refused (a planted symlink, a limit it cannot apply, …) is on the record too.
    audit.emit((a) =>
      a.finding({
        sandbox: name,
        kind: 'sandbox-start-refused',
        title: `sandbox ${name} not started: ${err instanceof Error ? err.message : String(err)}`,
        details: { workspace },
      }),
    );
    network?.close();
    await runtime.close();
    await router?.close();
    audit.close();
    throw err;
  }
  const skipped = started.cgroup?.report.skipped ?? [];
  if (opts.policy === undefined && !opts.bestEffortLimits && skipped.length > 0)
    say(skippedLimitsWarning(skipped));
  // Connections the kernel refused before the proxy saw them: 4001 refusals with a hint.
  started.process.onEvent((e) => {
    const refused = parseDirectConnect(e);
    if (refused) audit.emit((a) => directConnectEvent(a, name, refused));
  });
  const forward = (sig: NodeJS.Signals) => () => started.process.signal(sig);
  const handlers = (['SIGINT', 'SIGTERM', 'SIGHUP'] as const).map((sig) => {
    const h = forward(sig);
    process.on(sig, h);
    return [sig, h] as const;
  });
  network?.watch(resolve(opts.policy!), name, say);
  try {
    audit.emit((a) =>
      a.lifecycle({
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
    const ran = await agentStarted(started.process);
    reportEnforcement(name, started.process.events, audit);
    const { code } = await started.process.exited;
    if (!ran) {
      // Ours, not the agent's: the agent never ran. The one line that says why is the init's own
      // (already on stderr) or bwrap's, which we hold.
      const reason = startFailure(started.process, code);
      audit.emit((a) =>
        a.finding({
          sandbox: name,
          kind: 'sandbox-start-failed',
          title: `sandbox ${name} did not start: ${reason ?? `the init failed (exit ${code})`}`,
          details: { exit_code: code },
        }),
      );
      if (reason !== null) throw new SandboxStartError(`the sandbox did not start: ${reason}`);
      return 125;
    }
    const oom = started.cgroup?.oomKills() ?? 0;
    audit.emit((a) =>
      a.lifecycle({
        sandbox: name,
        activity: 'stop',
        message: `sandbox ${name} exited with status ${code}`,
        details: { exit_code: code, oom_kills: oom },
      }),
    );
    return code;
  } finally {
    for (const [sig, h] of handlers) process.off(sig, h);
    await started.cleanup();
    network?.close();
    await runtime.close();
    await router?.close();
    audit.close();
  }
}

/**
 * Runs whose carapace process died (SIGKILL, a crash) were swept; each gets a "lost" event in the
 * audit file it was writing, since it never wrote its stop event, and a line on stderr.
 */
export async function reportLostRuns(lost: LostRun[], dirs: StateDirs): Promise<void> {
  for (const { record, left } of lost) {
    say(
      `swept sandbox ${record.name} left by a carapace process that died (pid ${record.pid})` +
        (left.length > 0 ? `; could not remove: ${left.join('; ')}` : ''),
    );
    if (record.audit === undefined) continue;
    // Opened as a run opens it: never through a symlink a sandbox planted, never inside its trees.
    let fd: number;
    try {
      fd = openAuditFile(record.audit, new WritableTreeRegistry(dirs).trees());
    } catch (err) {
      say(`the lost run's audit file is not written: ${(err as Error).message}`);
      continue;
    }
    const audit = await import('../audit/index.js');
    const log = new audit.JsonlAuditLog(record.audit, fd);
    try {
      log.emit(
        audit.lifecycle({
          sandbox: record.name,
          activity: 'lost',
          message: `sandbox ${record.name} lost: its carapace process (pid ${record.pid}) died without stopping it`,
          details: { pid: record.pid, started_at: record.startedAt, left },
        }),
      );
    } finally {
      log.close();
    }
  }
}

/** Turns the init's status lines into audit events: what was enforced, and what the kernel lacked. */
function reportEnforcement(sandbox: string, events: InitEvent[], audit: RunAudit): void {
  for (const e of events) {
    if (['landlock', 'seccomp', 'rlimits', 'relay', 'connect_watch'].includes(e.event)) {
      const { event, ...details } = e;
      audit.emit((a) =>
        a.lifecycle({
          sandbox,
          activity: 'update',
          message: `${event} applied`,
          details: { [event]: details },
        }),
      );
    }
    const missing = e.missing;
    if (e.event === 'landlock' && Array.isArray(missing) && missing.length > 0) {
      audit.emit((a) =>
        a.finding({
          sandbox,
          kind: 'landlock-feature-missing',
          title: `Landlock features the kernel lacks: ${missing.join(', ')}`,
          severity: 'low',
          details: { missing, abi: e.abi },
        }),
      );
    }
    if (e.event === 'error') {
      audit.emit((a) =>
        a.finding({
          sandbox,
          kind: 'sandbox-start-failed',
          title: `sandbox start failed at ${String(e.step)}: ${String(e.message)}`,
          details: { step: e.step, errno: e.errno },
        }),
      );
    }
  }
}
