/**
 * What a starting gateway does with the sandboxes it finds stored (docs/gateway.md, "Reboots" and
 * "Sandboxes outlive the gateway"): re-adopts the ones still running, records how the others
 * ended while no gateway held them (their init's exit.json), hands those to their restart policy,
 * and starts again every one that should run. A policy revision an earlier Carapace stored in a
 * form this one refuses is read as what it meant then (src/policy/load/stored-text.ts), and the log
 * says so once per start.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { SandboxLauncher } from './sandbox-launcher.js';
import type { SandboxStore } from '../store/sandbox-store.js';

/**
 * Sandboxes that should run are started again (the previous gateway's died with it), and the
 * records of those that were running are corrected first.
 */
export async function resumeSandboxes(opts: {
  store: SandboxStore;
  launcher: SandboxLauncher;
  /** How sandboxes that ended while no gateway held them ended (readExits). */
  exits: ReadonlyMap<string, number>;
  log: (entry: Record<string, unknown>) => void;
}): Promise<void> {
  const { store, launcher, exits, log } = opts;
  for (const rec of store.list()) {
    try {
      for (const note of store.policy(rec.id, rec.spec.policyRev)?.notes ?? []) {
        log({
          level: 'info',
          msg: 'stored policy revision read as this version reads it',
          sandbox: rec.name,
          owner: rec.ownerUid,
          revision: rec.spec.policyRev,
          note,
        });
      }
      if (await launcher.adopt(rec)) {
        log({ level: 'info', msg: 'sandbox re-adopted', sandbox: rec.name, owner: rec.ownerUid });
        continue;
      }
      if (rec.state === 'running' || rec.state === 'creating' || rec.state === 'stopping') {
        // It ended while no gateway held it: by itself (its init left exit.json), or killed
        // with the host (a reboot) or by someone.
        const code = exits.get(rec.id) ?? null;
        store.update(rec.id, {
          state: 'stopped',
          exitCode: code,
          reason:
            code === null
              ? 'it ended while no gateway held it (killed, or the host restarted)'
              : 'it ended while no gateway held it',
        });
        if (code !== null) {
          launcher.ended(rec.id, { startedAt: rec.updatedAt, exitedAt: Date.now(), exitCode: code });
          continue;
        }
      }
      if (store.get(rec.id)?.desired !== 'running') continue;
      const startedAt = Date.now();
      try {
        await launcher.start(store.get(rec.id)!);
      } catch (err) {
        // As a crash: its restart policy tries again after its backoff (a workspace on a
        // filesystem not mounted yet at boot), or its crash loop ends it failed; the log says so.
        launcher.startFailed(rec.id, startedAt, err);
        continue;
      }
      log({ level: 'info', msg: 'sandbox started again', sandbox: rec.name, owner: rec.ownerUid });
    } catch (err) {
      store.update(rec.id, { state: 'failed', reason: (err as Error).message });
      log({
        level: 'warn',
        msg: 'sandbox could not be started again',
        sandbox: rec.name,
        error: (err as Error).message,
      });
    }
  }
}

/** exit.json of each sandbox whose init wrote one (docs/architecture.md, "The control socket"). */
export function readExits(ids: string[], runDir: string): Map<string, number> {
  const exits = new Map<string, number>();
  for (const id of ids) {
    try {
      const { code } = JSON.parse(
        readFileSync(join(runDir, 'sandboxes', id, 'control', 'exit.json'), 'utf8'),
      ) as { code: unknown };
      if (Number.isInteger(code)) exits.set(id, code as number);
    } catch {
      // none: it did not end, or not by itself
    }
  }
  return exits;
}
