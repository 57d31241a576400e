/**
 * The sandbox driver of this host: bubblewrap, carapace-init, cgroups (src/sandbox/). A started
 * sandbox is a bwrap process whose child is the init, PID 1 of the sandbox's pid namespace.
 */
import { agentStarted } from '../sandbox/launch.js';
import { startSandbox, type StartedSandbox } from '../sandbox/sandbox.js';
import type { IdentityRegistry } from '../sandbox/identity.js';
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
    });
    return new BubblewrapSandbox(req.spec.id ?? req.spec.name, started);
  }
}
