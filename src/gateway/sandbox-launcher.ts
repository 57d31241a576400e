/**
 * Runs the gateway's sandboxes on its runtime: turns a stored record (spec, policy revision,
 * sealed credentials) into a started sandbox attached to the shared proxy, keeps the record's
 * observed state in step with the sandbox's, and captures the agent's output into its log.
 *
 * Paths a user named (`--workspace`, `--mount`) are checked as that user at every start
 * (caller-paths.ts); the sandbox binds them only if they are still the inodes the check saw.
 */
import { closeSync, constants, fchownSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import type { SandboxProxy } from '../proxy/index.js';
import type { BubblewrapSandbox } from '../runtime/bubblewrap-driver.js';
import { settingsFromPolicy } from '../runtime/policy-settings.js';
import type { Runtime } from '../runtime/runtime.js';
import { egressNetwork } from '../runtime/sandbox-network.js';
import { specFromSettings } from '../runtime/sandbox-spec-from-policy.js';
import type { IdentityRegistry } from '../sandbox/identity.js';
import type { StateDirs } from '../sandbox/state-dirs.js';
import { handOverTree } from '../sandbox/untrusted-tree.js';
import { ApiError } from './api/errors.js';
import type { AuditRouter } from './audit-router.js';
import { checkAsCaller, type PathRequest } from './caller-paths.js';
import { primaryGid } from './host-groups.js';
import { checkPolicyText } from './policy-text.js';
import { nextStep, type RestartSettings, type Run } from './restart-policy.js';
import type { SandboxRecord, SandboxStore } from './store/sandbox-store.js';
import type { SecretBox } from './store/secret-box.js';

export interface SandboxLauncherOptions {
  runtime: Runtime;
  store: SandboxStore;
  audit: AuditRouter;
  secrets: SecretBox;
  dirs: StateDirs;
  identities: IdentityRegistry | null;
  /** True for a rootless gateway: every sandbox is the gateway's user, no path checks. */
  rootless: boolean;
  restart?: RestartSettings | undefined;
  /** The gateway's own log. */
  log?: (entry: Record<string, unknown>) => void;
}

interface Running {
  started: BubblewrapSandbox;
  proxy: SandboxProxy | null;
  startedAt: number;
  /** Set when the gateway asked it to end: its end is not a reason to restart it. */
  stopping: boolean;
  /** The policy revision it started with (live changes since are the policy service's). */
  policyRev: number;
}

export class SandboxLauncher {
  private readonly running = new Map<string, Running>();
  /** Recent runs of each sandbox, for its restart policy (this gateway's lifetime only). */
  private readonly runs = new Map<string, Run[]>();
  /** Restarts waiting for their backoff. */
  private readonly pending = new Map<string, NodeJS.Timeout>();

  constructor(private readonly opts: SandboxLauncherOptions) {
    for (const d of [this.logDir, this.caDir]) mkdirSync(d, { recursive: true, mode: 0o700 });
  }

  get logDir(): string {
    return join(this.opts.dirs.state, 'logs');
  }

  private get caDir(): string {
    return join(this.opts.dirs.state, 'ca');
  }

  logPath(id: string): string {
    return join(this.logDir, `${id}.log`);
  }

  isRunning(id: string): boolean {
    return this.running.has(id);
  }

  /** The running sandbox of a record, for exec, forwards and policy changes; null when stopped. */
  get(id: string): Running | null {
    return this.running.get(id) ?? null;
  }

  async start(rec: SandboxRecord): Promise<void> {
    if (this.running.has(rec.id))
      throw new ApiError('SANDBOX_BUSY', `sandbox ${rec.name} is already running`);
    const revision = this.opts.store.policy(rec.id, rec.spec.policyRev);
    if (!revision)
      throw new ApiError('INTERNAL', `sandbox ${rec.name} has no policy revision ${rec.spec.policyRev}`);
    const policy = await checkPolicyText(revision.text, `${rec.name}.yaml`);
    const engine = await import('../policy/index.js');
    const settings = settingsFromPolicy(policy, engine.resolveLimits(policy));
    if (settings.limits.memoryBytes === undefined && rec.spec.memoryBytes !== null) {
      settings.limits.memoryBytes = rec.spec.memoryBytes;
    }
    const { workspace, mounts, expected } = await this.checkedPaths(rec);
    const spec = specFromSettings(settings, {
      name: rec.name,
      workspace,
      env: rec.spec.env,
      mounts,
      command: rec.spec.command,
    });
    spec.id = rec.id;
    const credentials = new Map<string, string>();
    for (const [name, sealed] of this.opts.store.secrets(rec.id)) {
      credentials.set(name, this.opts.secrets.unseal(sealed, `${rec.id}/${name}`));
    }
    this.cancelPending(rec.id);
    const entry: Running = {
      started: undefined as unknown as BubblewrapSandbox,
      proxy: null,
      startedAt: Date.now(),
      stopping: false,
      policyRev: revision.rev,
    };
    const network = egressNetwork({
      proxy: await this.opts.runtime.proxy(),
      runDir: this.opts.dirs.run,
      generation: engine.compilePolicy(policy),
      credentials,
      // What the proxy may spend on it derives from its limits (docs/proxy.md, budgets).
      limits: settings.limits,
      caDir: join(this.caDir, rec.id),
      onAttached: (sb) => (entry.proxy = sb),
    });
    const { managed, started } = await this.opts.runtime.start(
      {
        spec,
        ownerUid: rec.ownerUid,
        network,
        removeWorkspace: false,
        ephemeral: false,
        bestEffortLimits: false,
        stdio: 'pipe',
        expectedInodes: expected,
      },
      (spawned) => {
        const process = (spawned as BubblewrapSandbox).started.process;
        process.stdin?.end();
        this.captureLogs(rec.id, process.stdout, process.stderr);
      },
    );
    entry.started = started as BubblewrapSandbox;
    this.running.set(rec.id, entry);
    managed.onChange((c) => {
      const cur = this.opts.store.get(rec.id);
      if (!cur) return;
      this.opts.store.update(rec.id, {
        state: c.to,
        ...(c.exitCode !== undefined ? { exitCode: c.exitCode } : {}),
        ...(c.reason !== undefined ? { reason: c.reason } : {}),
      });
    });
    this.opts.store.update(rec.id, { state: managed.state, exitCode: null, reason: null });
    void started.exited.then(async (code) => {
      await started.release();
      if (this.running.get(rec.id) === entry) this.running.delete(rec.id);
      this.opts.runtime.forget(rec.id);
      if (!entry.stopping)
        this.ended(rec.id, { startedAt: entry.startedAt, exitedAt: Date.now(), exitCode: code });
    });
  }

  /** The agent ended by itself: its restart policy says what next. */
  private ended(id: string, run: Run): void {
    const rec = this.opts.store.get(id);
    if (!rec || rec.desired !== 'running') return;
    const runs = [...(this.runs.get(id) ?? []), run].slice(-32);
    this.runs.set(id, runs);
    const step = nextStep(rec.spec.restart, runs, this.opts.restart);
    if (step.kind === 'stay-stopped') {
      this.opts.store.update(id, { desired: 'stopped' });
      return;
    }
    if (step.kind === 'crash-loop') {
      this.opts.store.update(id, { state: 'failed', reason: step.reason });
      this.opts.log?.({
        level: 'warn',
        msg: 'sandbox in a crash loop',
        sandbox: rec.name,
        owner: rec.ownerUid,
      });
      return;
    }
    this.opts.store.update(id, {
      reason: `restarting in ${formatMs(step.delayMs)} (status ${run.exitCode})`,
    });
    this.pending.set(
      id,
      setTimeout(() => {
        this.pending.delete(id);
        const cur = this.opts.store.get(id);
        if (!cur || cur.desired !== 'running' || this.running.has(id)) return;
        this.opts.store.update(id, { restarts: cur.restarts + 1 });
        this.start(this.opts.store.get(id)!).catch((err: unknown) => {
          this.opts.store.update(id, { state: 'failed', reason: (err as Error).message });
        });
      }, step.delayMs),
    );
  }

  private cancelPending(id: string): void {
    const t = this.pending.get(id);
    if (t) clearTimeout(t);
    this.pending.delete(id);
  }

  /** Forgets the restart history of a sandbox (started by hand: a fresh count). */
  resetRuns(id: string): void {
    this.runs.delete(id);
  }

  /** Cancels every pending restart (the gateway stops). */
  cancelAll(): void {
    for (const id of [...this.pending.keys()]) this.cancelPending(id);
  }

  /** Stops a running sandbox (SIGTERM, then everything killed after `graceMs`); no-op if stopped. */
  async stop(id: string, graceMs = 10_000): Promise<void> {
    this.cancelPending(id);
    const run = this.running.get(id);
    const managed = this.opts.runtime.get(id);
    if (!run || !managed) return;
    run.stopping = true;
    await managed.stop(graceMs);
    await run.started.release();
    this.running.delete(id);
    this.opts.runtime.forget(id);
  }

  /** Forgets everything the launcher holds of a record (its runtime entry). */
  async forget(rec: SandboxRecord): Promise<void> {
    await this.stop(rec.id, 0);
  }

  /**
   * A workspace kept past its sandbox, handed back to the sandbox's owner (the sandbox's uid owned
   * it). Returns its path.
   */
  async handBack(rec: SandboxRecord, ownWorkspace: boolean): Promise<string> {
    if (this.opts.rootless) return rec.spec.workspace;
    const gid = (await primaryGid(rec.ownerUid)) ?? rec.ownerUid;
    let fd: number;
    try {
      fd = openSync(rec.spec.workspace, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
    } catch {
      return rec.spec.workspace; // gone, or replaced by a symlink: nothing to hand back
    }
    try {
      handOverTree(fd, { uid: rec.ownerUid, gid });
    } finally {
      closeSync(fd);
    }
    if (ownWorkspace) {
      // The gateway's own workspace lies in the sandbox's storage directory: that too is the owner's now.
      const storage = openSync(
        join(rec.spec.workspace, '..'),
        constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW,
      );
      try {
        fchownSync(storage, rec.ownerUid, gid);
      } finally {
        closeSync(storage);
      }
    }
    return rec.spec.workspace;
  }

  /** The workspace and mounts of a record, checked as its owner where the owner named them. */
  private async checkedPaths(rec: SandboxRecord) {
    const requests: PathRequest[] = [];
    if (!rec.spec.ownWorkspace)
      requests.push({ path: rec.spec.workspace, write: true, create: true, what: '--workspace' });
    for (const m of rec.spec.mounts)
      requests.push({ path: m.host, write: !m.readOnly, what: `--mount ${m.path}` });
    if (this.opts.rootless || rec.ownerUid === 0 || requests.length === 0) {
      return { workspace: rec.spec.workspace, mounts: rec.spec.mounts, expected: undefined };
    }
    const gid = (await primaryGid(rec.ownerUid)) ?? rec.ownerUid;
    const checked = await checkAsCaller(rec.ownerUid, gid, requests);
    const expected = new Map<string, { dev: number; ino: number }>();
    let i = 0;
    let workspace = rec.spec.workspace;
    if (!rec.spec.ownWorkspace) {
      workspace = checked[i]!.real;
      expected.set(workspace, checked[i++]!);
    }
    const mounts = rec.spec.mounts.map((m) => {
      const c = checked[i++]!;
      expected.set(c.real, c);
      return { ...m, host: c.real };
    });
    return { workspace, mounts, expected };
  }

  /** The agent's stdout and stderr as JSON lines in its log, as the init writes them with --log-fd. */
  private captureLogs(id: string, stdout: Readable | null, stderr: Readable | null): void {
    const fd = openSync(
      this.logPath(id),
      constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW,
      0o600,
    );
    let open = 2;
    const write = (s: 'out' | 'err') => (chunk: Buffer) => {
      const text = chunk.toString('utf8');
      const record = Buffer.from(text, 'utf8').equals(chunk)
        ? { t: Date.now(), s, d: text }
        : { t: Date.now(), s, b: chunk.toString('base64') };
      writeSync(fd, JSON.stringify(record) + '\n');
    };
    const done = () => {
      if (--open === 0) closeSync(fd);
    };
    for (const [stream, s] of [
      [stdout, 'out'],
      [stderr, 'err'],
    ] as const) {
      if (!stream) {
        done();
        continue;
      }
      stream.on('data', write(s));
      stream.on('close', done);
      stream.on('error', () => {});
    }
  }
}

function formatMs(ms: number): string {
  return ms < 1000 ? `${ms}ms` : ms < 120_000 ? `${Math.round(ms / 1000)}s` : `${Math.round(ms / 60_000)}m`;
}
