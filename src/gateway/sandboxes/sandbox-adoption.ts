/**
 * Re-adoption: a sandbox an earlier gateway started, still running when this one starts, taken
 * over instead of started again. Sandboxes outlive the gateway (sandbox-launcher.ts): the runtime
 * finds one by its run record's pid and start time (runtime.adopt), and here it is attached to
 * this gateway's proxy again, on the socket in the directory its relay already knows, and held
 * like one this gateway started (held-sandboxes.ts).
 *
 * A sandbox found running that this gateway cannot serve (its policy revision unreadable, its
 * proxy socket not attachable) is stopped, not left running without its proxy.
 */
import { join } from 'node:path';
import { lifecycle } from '../../audit/index.js';
import type { AdoptedSandbox } from '../../runtime/adopted-sandbox.js';
import type { Runtime } from '../../runtime/runtime.js';
import { SandboxCgroup } from '../../sandbox/cgroup/cgroup.js';
import { SandboxControl } from '../../sandbox/control/control.js';
import type { IdentityRegistry } from '../../sandbox/identity/identity.js';
import type { NetworkAttachment } from '../../sandbox/sandbox.js';
import type { StateDirs } from '../../sandbox/state-dirs.js';
import type { AuditRouter } from '../audit-router.js';
import type { HeldSandboxes } from './held-sandboxes.js';
import { egressOf, identityOf, policyOf } from './sandbox-inputs.js';
import type { SandboxRecord, SandboxStore } from '../store/sandbox-store.js';
import type { SecretBox } from '../store/secret-box.js';

export interface AdoptionOptions {
  runtime: Runtime;
  store: SandboxStore;
  audit: AuditRouter;
  secrets: SecretBox;
  dirs: StateDirs;
  identities: IdentityRegistry | null;
  rootless: boolean;
  /** Where each sandbox's CA key is kept (`<state>/ca`). */
  caDir: string;
  /** Where an adopted sandbox is held from now on. */
  held: HeldSandboxes;
  /** The gateway's own log. */
  log?: ((entry: Record<string, unknown>) => void) | undefined;
}

/**
 * Re-adopts a record's sandbox if it still runs (started by an earlier gateway); returns whether
 * it did. Its proxy socket is served again in the directory its relay knows.
 */
export async function adoptSandbox(rec: SandboxRecord, opts: AdoptionOptions): Promise<boolean> {
  const adopted = opts.runtime.adopt(rec.id, rec.name, rec.ownerUid);
  if (!adopted) return false;
  const sb = adopted.started as AdoptedSandbox;
  // Its attachment to the proxy is made here, not by the driver (which releases a started
  // sandbox's with it): closed here when it ends, or the proxy keeps it ("already attached").
  let attachment: NetworkAttachment | null = null;
  try {
    const { policy, settings, engine } = await policyOf(opts.store, rec);
    const network = egressOf(opts, opts.caDir, rec, engine.compilePolicy(policy), settings.limits, true);
    attachment = await network.provider(rec.id, identityOf(opts, rec));
    const cgroup = sb.record.cgroupKey ? SandboxCgroup.existing(sb.record.cgroupKey) : null;
    attachment.started(sb.pid, cgroup);
    const control = new SandboxControl(join(sb.controlDir, 'control.sock'));
    const entry = opts.held.hold({
      rec,
      sandbox: sb,
      control,
      proxy: network.proxy(),
      network: attachment,
      managed: adopted.managed,
      adopted: true,
    });
    await opts.held.bindForwards(rec, entry);
  } catch (err) {
    // Running, but not ours to serve: stop it rather than leave it without its proxy.
    opts.log?.({
      level: 'warn',
      msg: 'cannot re-adopt a sandbox',
      sandbox: rec.name,
      error: (err as Error).message,
    });
    sb.kill();
    await sb.exited;
    await attachment?.close();
    await sb.release();
    return false;
  }
  opts.audit.emit(
    lifecycle({
      sandbox: rec.id,
      activity: 'update',
      message: `sandbox ${rec.name} re-adopted: its gateway was lost (stopped or killed) and another took it over`,
      details: { gateway_lost: true, pid: sb.pid },
    }),
  );
  return true;
}
