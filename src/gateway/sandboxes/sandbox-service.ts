/**
 * What the gateway does with sandboxes, for a caller: create, list, get, start, stop, restart,
 * delete. Every operation is scoped to the caller: a user names only their own sandboxes (another
 * user's name is simply not found), root and members of carapace-admin may name anyone's with
 * `owner`. Quotas bound what one user can hold (quotas.ts). Running a sandbox is the launcher's
 * (sandbox-launcher.ts); the records are the store's; what the API shows of one, sandbox-views.ts's.
 */
import { randomBytes } from 'node:crypto';
import { removeAllBut, removeTree } from '../../sandbox/host-paths/remove-tree.js';
import { basename, join } from 'node:path';
import type { IdentityRegistry } from '../../sandbox/identity/identity.js';
import { assertSandboxName } from '../../sandbox/identity/identity.js';
import type { StateDirs } from '../../sandbox/state-dirs.js';
import { ApiError } from '../api/errors.js';
import type { JsonText } from '../api/server.js';
import type { Caller } from '../api/router.js';
import type { AuditRouter } from '../audit-router.js';
import type { SandboxLauncher } from './sandbox-launcher.js';
import type { Forward, RestartPolicy, SandboxRecord, SandboxStore } from '../store/sandbox-store.js';
import type { SecretBox } from '../store/secret-box.js';
import { assertListenable, checkPolicyText, policyMemoryLimit } from '../policy-text.js';
import {
  ForwardBindError,
  freeHostPortNear,
  probeHostPort,
  type ForwardSet,
} from '../sandbox-io/forwards.js';
import { lifecycle } from '../../audit/index.js';
import type { UserQuotas } from './quotas.js';
import { SandboxViews, type SandboxView } from './sandbox-views.js';

export type { SandboxView } from './sandbox-views.js';

export interface CreateRequest {
  name: string;
  command: string[];
  /** Policy YAML; the built-in default policy without one. */
  policy?: string | undefined;
  workspace?: string | undefined;
  env: Record<string, string>;
  /** Credential values by name (sealed at rest; the agent sees placeholders). */
  credentials: Record<string, string>;
  mounts: { host: string; path: string; readOnly: boolean }[];
  forwards: Forward[];
  labels: Record<string, string>;
  restart: RestartPolicy;
  /** Start it now (default), or only record it. */
  start: boolean;
}

export interface SandboxServiceOptions {
  store: SandboxStore;
  launcher: SandboxLauncher;
  audit: AuditRouter;
  secrets: SecretBox;
  dirs: StateDirs;
  identities: IdentityRegistry | null;
  defaultPolicy: string;
  /** The gateway's per-user account, shared with `carapace run`'s sandboxes (one-off-runs.ts). */
  quotas: UserQuotas;
}

export class SandboxService {
  private readonly views: SandboxViews;

  constructor(private readonly opts: SandboxServiceOptions) {
    this.views = new SandboxViews(opts.store, opts.launcher);
  }

  /** The caller's sandboxes (`all`: everyone's) as a JSON array of views (sandbox-views.ts). */
  listJson(caller: Caller, all: boolean): JsonText {
    this.mayList(caller, all);
    return this.views.listJson(all ? undefined : caller.uid);
  }

  view(rec: SandboxRecord, forwards?: Forward[]): SandboxView {
    return this.views.view(rec, forwards);
  }

  /** The record `name` names for `caller` (an admin may give `owner`); not found otherwise. */
  resolve(caller: Caller, name: string, owner?: number): SandboxRecord {
    if (owner !== undefined && owner !== caller.uid && !caller.admin) {
      throw new ApiError(
        'FORBIDDEN',
        `only root and members of carapace-admin act on other users' sandboxes`,
      );
    }
    const rec = this.opts.store.byName(owner ?? caller.uid, name);
    if (!rec)
      throw new ApiError(
        'SANDBOX_NOT_FOUND',
        `no sandbox named "${name}"${owner !== undefined ? ` of uid ${owner}` : ''}`,
      );
    return rec;
  }

  list(caller: Caller, all: boolean): SandboxRecord[] {
    this.mayList(caller, all);
    return this.opts.store.list(all ? undefined : caller.uid);
  }

  private mayList(caller: Caller, all: boolean): void {
    if (all && !caller.admin)
      throw new ApiError('FORBIDDEN', 'only root and members of carapace-admin list every sandbox');
  }

  async create(caller: Caller, req: CreateRequest): Promise<SandboxRecord> {
    try {
      assertSandboxName(req.name);
    } catch (err) {
      throw new ApiError('INVALID_SANDBOX_NAME', (err as Error).message);
    }
    if (req.command.length === 0)
      throw new ApiError('INVALID_INPUT', 'command: give the command to run, after --');
    if (this.opts.store.byName(caller.uid, req.name)) {
      throw new ApiError(
        'SANDBOX_EXISTS',
        `you already have a sandbox named "${req.name}": pick another name or delete it`,
      );
    }
    const policyText = req.policy ?? this.opts.defaultPolicy;
    const policy = await checkPolicyText(policyText, `${req.name}.yaml`);
    for (const f of req.forwards)
      assertListenable(req.name, f, policy.listen_ports, req.policy === undefined ? 'default' : 'given');
    assertMayBind(caller, req.forwards);
    // A user's sandbox always has a memory limit: the policy's, or the default one, which counts
    // against the user's quota like any other.
    const declared = await policyMemoryLimit(policy);
    const memoryBytes = declared ?? this.opts.quotas.defaultMemory(caller);
    this.opts.quotas.check(caller, memoryBytes ?? undefined);
    this.assertNotForwarded(req.forwards);
    // Its host ports are listened on now (a sandbox started now keeps them) or tried (--no-start),
    // before anything is stored: a port another program holds is refused, and nothing is kept.
    let reserved: ForwardSet | undefined;
    try {
      if (req.start) reserved = await this.opts.launcher.reserveForwards(req.forwards);
      else for (const f of req.forwards) await probeHostPort(f.hostPort);
    } catch (err) {
      throw await this.unbindable(err, req.forwards, (p, f) => `--forward ${p}:${f.sandboxPort}`);
    }
    let rec: SandboxRecord;
    try {
      rec = this.record(caller, req, policyText, memoryBytes);
    } catch (err) {
      await reserved?.close();
      throw err;
    }
    if (!req.start) return rec;
    try {
      await this.opts.launcher.start(rec, reserved);
    } catch (err) {
      // A first start that fails (a --mount source or a --workspace that is not what it must be,
      // found only by the start's checks) is a create refused: nothing of it is kept, so the same
      // create, corrected, is not refused as "already have" by a `failed` leftover.
      await this.discard(rec, false);
      throw err;
    }
    return this.opts.store.get(rec.id)!;
  }

  /** A new sandbox's record, sealed credentials and forwards, stored with nothing awaited between. */
  private record(
    caller: Caller,
    req: CreateRequest,
    policyText: string,
    memoryBytes: number | null,
  ): SandboxRecord {
    // Again, now that nothing awaits until the forwards' rows: another create may have taken a
    // host port while this one listened on its own.
    this.assertNotForwarded(req.forwards);
    const id = `sb-${randomBytes(5).toString('hex')}`;
    const ownWorkspace = req.workspace === undefined;
    const workspace = req.workspace ?? join(this.opts.dirs.state, 'sandboxes', id, 'workspace');
    const rec = this.opts.store.create(
      {
        id,
        ownerUid: caller.uid,
        name: req.name,
        desired: req.start ? 'running' : 'stopped',
        state: req.start ? 'creating' : 'stopped',
        spec: {
          command: req.command,
          env: req.env,
          mounts: req.mounts,
          workspace,
          ownWorkspace,
          labels: req.labels,
          restart: req.restart,
          policyRev: 1,
          credentials: Object.keys(req.credentials),
          memoryBytes,
        },
        exitCode: null,
        reason: null,
      },
      policyText,
    );
    for (const [name, value] of Object.entries(req.credentials)) {
      this.opts.store.putSecret(id, name, this.opts.secrets.seal(value, `${id}/${name}`));
    }
    for (const f of req.forwards) this.opts.store.addForward(id, f);
    this.opts.audit.emit(
      lifecycle({
        sandbox: id,
        activity: 'update',
        message: `sandbox ${rec.name} created by uid ${caller.uid}`,
        details: { name: rec.name, owner: rec.ownerUid, command: req.command },
      }),
    );
    return rec;
  }

  /** A host port one of the gateway's forwards has (its sandbox running or not) is refused. */
  private assertNotForwarded(forwards: readonly Forward[]): void {
    const taken = this.forwardedPorts();
    for (const f of forwards) {
      if (taken.has(f.hostPort))
        throw new ApiError('FORWARD_PORT_TAKEN', `host port ${f.hostPort} is already forwarded`);
      taken.add(f.hostPort);
    }
  }

  private forwardedPorts(): Set<number> {
    return new Set([...this.opts.store.allForwards().values()].flat().map((f) => f.hostPort));
  }

  /**
   * A host port that could not be listened on, as one line: which, why, and how to forward
   * another (`instead`, with a port free now when one near it is). Anything else is returned as is.
   */
  private async unbindable(
    err: unknown,
    forwards: readonly Forward[],
    instead: (hostPort: number | string, f: Forward) => string,
  ): Promise<unknown> {
    if (!(err instanceof ForwardBindError)) return err;
    const f = forwards.find((x) => x.hostPort === err.hostPort)!;
    const taken = this.forwardedPorts();
    for (const x of forwards) taken.add(x.hostPort);
    const free = await freeHostPortNear(err.hostPort, taken);
    return new ApiError(err.code, `${err.message}: pick another, e.g. ${instead(free ?? 'HOSTPORT', f)}`);
  }

  async start(caller: Caller, name: string, owner?: number): Promise<SandboxRecord> {
    const rec = this.resolve(caller, name, owner);
    if (this.opts.launcher.isRunning(rec.id))
      throw new ApiError('SANDBOX_BUSY', `sandbox ${name} is already running`);
    this.opts.store.update(rec.id, { desired: 'running' });
    // Started by hand: its restart policy counts quick runs from here (a crash loop's end waits
    // for this start, which would otherwise count the old runs and fail it again at once).
    this.opts.launcher.resetRuns(rec.id);
    await this.opts.launcher.start(this.opts.store.get(rec.id)!);
    return this.opts.store.get(rec.id)!;
  }

  /**
   * Forwards a host loopback port to a port inside the sandbox, now if it runs and whenever it
   * starts again. Ports below 1024 are root's and carapace-admin's to forward.
   */
  async addForward(caller: Caller, name: string, owner: number | undefined, f: Forward): Promise<Forward[]> {
    const rec = this.resolve(caller, name, owner);
    const revision = this.opts.store.policy(rec.id, rec.spec.policyRev);
    if (revision) {
      const policy = await checkPolicyText(revision.text, `${rec.name}.yaml`);
      assertListenable(name, f, policy.listen_ports);
    }
    assertMayBind(caller, [f]);
    // Stored first (a port another forward has is refused as such), then listened on (running)
    // or tried (stopped): a port another program holds is refused, and the row goes again.
    this.opts.store.addForward(rec.id, f);
    try {
      const held = this.opts.launcher.get(rec.id);
      await (held ? held.forwards.add(f) : probeHostPort(f.hostPort));
    } catch (err) {
      this.opts.store.removeForward(rec.id, f.hostPort);
      throw await this.unbindable(err, [f], (p) => `carapace sandbox forward ${name} ${p}:${f.sandboxPort}`);
    }
    return this.view(this.opts.store.get(rec.id)!).forwards;
  }

  async removeForward(
    caller: Caller,
    name: string,
    owner: number | undefined,
    hostPort: number,
  ): Promise<Forward[]> {
    const rec = this.resolve(caller, name, owner);
    if (!this.opts.store.removeForward(rec.id, hostPort)) {
      throw new ApiError('NOT_FOUND', `sandbox ${name} has no forward from host port ${hostPort}`);
    }
    await this.opts.launcher.get(rec.id)?.forwards.remove(hostPort);
    return this.view(this.opts.store.get(rec.id)!).forwards;
  }

  /** The control socket of a running sandbox, for exec; the caller's own sandboxes only. */
  controlOf(caller: Caller, name: string, owner?: number): { rec: SandboxRecord; socket: string } {
    const rec = this.resolve(caller, name, owner);
    const held = this.opts.launcher.get(rec.id);
    if (!held)
      throw new ApiError(
        'SANDBOX_NOT_RUNNING',
        `sandbox ${name} is ${rec.state}, not running: carapace sandbox start ${name}`,
      );
    return { rec, socket: held.control.socketPath };
  }

  /** Changes what can change without a restart: the restart policy, labels. */
  update(
    caller: Caller,
    name: string,
    owner: number | undefined,
    patch: {
      restart?: RestartPolicy | undefined;
      labels?: Record<string, string> | undefined;
      version?: number | undefined;
    },
  ): SandboxRecord {
    const rec = this.resolve(caller, name, owner);
    const spec = {
      ...rec.spec,
      ...(patch.restart ? { restart: patch.restart } : {}),
      ...(patch.labels ? { labels: patch.labels } : {}),
    };
    return this.opts.store.update(rec.id, { spec }, patch.version);
  }

  async stop(caller: Caller, name: string, owner?: number, graceMs?: number): Promise<SandboxRecord> {
    const rec = this.resolve(caller, name, owner);
    this.opts.store.update(rec.id, { desired: 'stopped' });
    await this.opts.launcher.stop(rec.id, graceMs);
    return this.opts.store.get(rec.id)!;
  }

  async restart(caller: Caller, name: string, owner?: number, graceMs?: number): Promise<SandboxRecord> {
    const rec = this.resolve(caller, name, owner);
    await this.opts.launcher.stop(rec.id, graceMs);
    this.opts.store.update(rec.id, { desired: 'running' });
    this.opts.launcher.resetRuns(rec.id);
    await this.opts.launcher.start(this.opts.store.get(rec.id)!);
    return this.opts.store.get(rec.id)!;
  }

  /**
   * Stops the sandbox and removes everything of it: record, storage, a workspace the gateway made,
   * uid record, audit trail, logs. A workspace the caller gave is kept (handed back to its owner);
   * with `keepWorkspace` the gateway's own is kept too, and its path returned.
   */
  async delete(
    caller: Caller,
    name: string,
    owner?: number,
    keepWorkspace = false,
  ): Promise<{ kept: string | null }> {
    return this.discard(this.resolve(caller, name, owner), keepWorkspace);
  }

  /** delete() of a record: stops it and removes everything of it (see there). */
  private async discard(rec: SandboxRecord, keepWorkspace: boolean): Promise<{ kept: string | null }> {
    await this.opts.launcher.stop(rec.id, 0);
    await this.opts.launcher.forget(rec);
    const storage = join(this.opts.dirs.state, 'sandboxes', rec.id);
    let kept: string | null = null;
    const keepsStorage = keepWorkspace && rec.spec.ownWorkspace;
    // What is kept of the gateway's own workspace is the workspace: the storage's other trees (the
    // policy's read_write paths) go first, or they would be reachable under a directory handed to
    // the user, still owned by a uid the registry then frees for another sandbox.
    // Off the event loop: a tree may hold any number of files (remove-tree.ts).
    if (keepsStorage) await removeAllBut(storage, basename(rec.spec.workspace));
    if (!rec.spec.ownWorkspace || keepWorkspace) {
      kept = await this.opts.launcher.handBack(rec, keepsStorage);
    }
    if (kept === null || !kept.startsWith(storage)) await removeTree(storage);
    this.opts.store.delete(rec.id);
    this.views.forget(rec.id);
    await this.opts.audit.remove(rec.id); // and its rotated generations
    await this.opts.launcher.logs.remove(rec.id); // every generation of its agent log
    await this.opts.identities?.release({ state: this.opts.dirs.state, name: rec.id });
    return { kept };
  }
}

/**
 * A host port below 1024 is root's to bind: the gateway (root) binds one for root and
 * carapace-admin only, whichever route asks (create's forwards as well as `sandbox forward`).
 * Threat: a user has root's gateway listen for them where only root may, on a port the host's
 * own services (and their clients) take to be root's.
 */
function assertMayBind(caller: Caller, forwards: readonly Forward[]): void {
  for (const f of forwards) {
    if (f.hostPort < 1024 && !caller.admin) {
      throw new ApiError(
        'FORBIDDEN',
        `host port ${f.hostPort} is privileged: forward a port of 1024 or above`,
      );
    }
  }
}
