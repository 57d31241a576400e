/**
 * The sandbox driver of this host: bubblewrap, carapace-init, cgroups (src/sandbox/). A started
 * sandbox is a bwrap process whose child is the init, PID 1 of the sandbox's pid namespace.
 */
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { agentStarted, startFailure } from '../sandbox/launch/running-sandbox.js';
import { ownerAlive, readRunRecord } from '../sandbox/sandbox-lock.js';
import { adoptGuard, type MaskCheck } from '../sandbox/mounts/mask-guard.js';
import { releaseRun } from '../sandbox/sweep.js';
import { AdoptedSandbox } from './adopted-sandbox.js';
import { startSandbox, type StartedSandbox } from '../sandbox/sandbox.js';
import type { IdentityRegistry } from '../sandbox/identity/identity.js';
import type { StateDirs } from '../sandbox/state-dirs.js';
import type { DriverSandbox, DriverStartRequest, SandboxDriver } from './driver.js';

export interface BubblewrapDriverOptions {
  dirs: StateDirs;
  /** The host's uid registry (as root); null: rootless. */
  identities: IdentityRegistry | null;
}

/** A sandbox this driver started: the driver's view, and the sandbox layer's whole record. */
export class BubblewrapSandbox implements DriverSandbox {
  readonly exited: Promise<number>;
  readonly ready: Promise<boolean>;

  constructor(
    readonly id: string,
    readonly started: StartedSandbox,
  ) {
    this.exited = started.process.exited.then((e) => e.code);
    this.ready = agentStarted(started.process);
  }

  get pid(): number {
    return this.started.process.initPid;
  }

  whyNotStarted(status: number): string {
    const process = this.started.process;
    const said = process.events.find((e) => e.event === 'error')?.message;
    return (
      startFailure(process, status) ?? (typeof said === 'string' ? said : `the init failed (exit ${status})`)
    );
  }

  signal(sig: NodeJS.Signals): void {
    this.started.process.signal(sig);
  }

  kill(): void {
    // PID 1 of a pid namespace takes every process of the namespace with it.
    this.started.process.signal('SIGKILL');
  }

  release(): Promise<void> {
    return this.started.cleanup();
  }
}

export class BubblewrapDriver implements SandboxDriver {
  readonly name = 'bubblewrap';

  constructor(private readonly opts: BubblewrapDriverOptions) {}

  async start(req: DriverStartRequest): Promise<BubblewrapSandbox> {
    const started = await startSandbox(req.spec, {
      dirs: this.opts.dirs,
      identities: this.opts.identities,
      ephemeral: req.ephemeral,
      removeWorkspace: req.removeWorkspace,
      bestEffortLimits: req.bestEffortLimits,
      stdio: req.stdio,
      term: req.term,
      landlockAbiMax: req.landlockAbiMax,
      network: req.network,
      auditFile: req.auditFile,
      hostRoot: req.hostRoot,
      expectedInodes: req.expectedInodes,
      handOverFrom: req.handOverFrom,
      control: req.control,
      logFile: req.logFile,
      logLimitBytes: req.logLimitBytes,
      detached: req.detached,
      onMaskCheck: req.onMaskCheck,
    });
    return new BubblewrapSandbox(req.spec.id ?? req.spec.name, started);
  }

  /**
   * A sandbox an earlier process started detached and that still runs: its run record's owner is
   * its init, alive. What it made on the host is removed from that record once it ends.
   */
  adopt(id: string, onMaskCheck?: (check: MaskCheck) => void): AdoptedSandbox | null {
    const lockFile = join(this.opts.dirs.run, 'sandboxes', `${id}.lock`);
    const record = readRunRecord(lockFile);
    if (record === null || record.runtime === undefined || !ownerAlive(record)) return null;
    // Nothing watched its masks while no process held it: checked at once, then guarded.
    const guard = adoptGuard(record.runtime, record.pid, record.start, onMaskCheck);
    const adopted = new AdoptedSandbox(id, record, join(record.runtime, 'control'), async () => {
      guard?.close();
      await releaseRun(record, this.opts.dirs, this.opts.identities);
      rmSync(lockFile, { force: true });
    });
    void adopted.exited.then(() => guard?.close());
    return adopted;
  }
}
