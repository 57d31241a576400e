/**
 * A sandbox as the API shows it (`sandbox get`, `sandbox list`): its record, its forwards, and
 * what only the launcher knows: when its current run started, whether each forward listens.
 */
import { JsonText } from '../api/server.js';
import type { SandboxLauncher } from './sandbox-launcher.js';
import type { Forward, RestartPolicy, SandboxRecord, SandboxStore } from '../store/sandbox-store.js';

/** A forward as the API shows it: whether it listens (its sandbox running), and why not. */
export interface ForwardView extends Forward {
  listening: boolean;
  /** Why a running sandbox's forward does not listen (forwards.ts); null otherwise. */
  reason: string | null;
}

/** A sandbox as the API shows it. */
export interface SandboxView {
  name: string;
  id: string;
  owner: number;
  state: string;
  desired: 'running' | 'stopped';
  command: string[];
  workspace: string;
  restart: RestartPolicy;
  labels: Record<string, string>;
  forwards: ForwardView[];
  policyRev: number;
  restarts: number;
  exitCode: number | null;
  reason: string | null;
  createdAt: string;
  updatedAt: string;
  /** When its current run started (running sandboxes; null otherwise). */
  startedAt: string | null;
  /**
   * When its restart policy starts it again (a restart waiting for its backoff; null: none waits).
   * Its state is still the end's (`stopped`, or `failed` for a start that failed); the views show
   * it as `restarting`.
   */
  restartAt: string | null;
  version: number;
}

export class SandboxViews {
  /** Each sandbox's view as JSON, with the version and forwards (and their states) it was made from (listJson). */
  private readonly json = new Map<string, { key: string; json: string }>();

  constructor(
    private readonly store: SandboxStore,
    private readonly launcher: SandboxLauncher,
  ) {}

  /**
   * The sandboxes of `owner` (undefined: everyone's) as a JSON array of views. Each view's JSON is kept
   * for the record's version and forwards (whether each listens changes no version: it is in the
   * key too, as is a restart waiting), so a list reads only ids and versions and serializes
   * what changed since the last one (1,000 sandboxes: ~1 ms instead of ~10, and ~400 KB less
   * garbage per list).
   */
  listJson(owner: number | undefined): JsonText {
    const versions = this.store.versions(owner);
    const forwards = this.store.allForwards();
    const keyOf = (id: string, version: number) => {
      const list = forwards.get(id);
      // A restart waiting is in the view (restartAt) and changes no version either.
      const at = this.launcher.restartAt(id);
      const base = at === null ? `${version}` : `${version}@${at}`;
      if (!list) return base;
      const states = this.launcher.forwardStates(id);
      return `${base}/${list
        .map((f) => {
          const s = states?.(f.hostPort);
          return `${f.hostPort}:${f.sandboxPort}:${s ? (s.listening ? 'l' : s.reason) : '-'}`;
        })
        .join(',')}`;
    };
    if (versions.some((v) => this.json.get(v.id)?.key !== keyOf(v.id, v.version))) {
      for (const r of this.store.list(owner)) {
        const key = keyOf(r.id, r.version);
        if (this.json.get(r.id)?.key !== key)
          this.json.set(r.id, { key, json: JSON.stringify(this.view(r, forwards.get(r.id) ?? [])) });
      }
    }
    return new JsonText(`[${versions.map((v) => this.json.get(v.id)!.json).join(',')}]`);
  }

  view(rec: SandboxRecord, forwards = this.store.forwards(rec.id)): SandboxView {
    const started = rec.state === 'running' ? this.launcher.startedAt(rec.id) : null;
    const restartAt = this.launcher.restartAt(rec.id);
    const states = this.launcher.forwardStates(rec.id);
    return {
      name: rec.name,
      id: rec.id,
      owner: rec.ownerUid,
      state: rec.state,
      desired: rec.desired,
      command: rec.spec.command,
      workspace: rec.spec.workspace,
      restart: rec.spec.restart,
      labels: rec.spec.labels,
      forwards: forwards.map((f) => ({
        ...f,
        ...(states?.(f.hostPort) ?? { listening: false, reason: null }),
      })),
      policyRev: rec.spec.policyRev,
      restarts: rec.restarts,
      exitCode: rec.exitCode,
      reason: rec.reason,
      createdAt: new Date(rec.createdAt).toISOString(),
      updatedAt: new Date(rec.updatedAt).toISOString(),
      // The init's start is read against the boot's time in whole seconds (/proc/stat's btime, the
      // same in every gateway process: a re-adopted sandbox keeps its startedAt): up to a second
      // early, it is never put before the record it was started from.
      startedAt: started === null ? null : new Date(Math.max(started, rec.createdAt)).toISOString(),
      restartAt: restartAt === null ? null : new Date(restartAt).toISOString(),
      version: rec.version,
    };
  }

  /** Drops what is kept of a deleted sandbox. */
  forget(id: string): void {
    this.json.delete(id);
  }
}
