/**
 * Connects a sandbox to the egress proxy: a Unix socket per sandbox that only its relay can reach,
 * a CA of its own, and the agent's proxy settings.
 *
 * Security assumptions: the socket's directory is owned by the sandbox's uid (mode 0700) and is
 * never mounted inside; the relay reaches it only through the directory fd the init inherits and
 * closes before the agent runs. The CA key stays in this process. Credentials reach the sandbox
 * only as `carapace:cred:NAME` placeholders; the proxy swaps in the value on bound endpoints.
 */
import { chownSync, closeSync, constants, mkdirSync, openSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { PolicyGeneration } from '../policy/index.js';
import {
  buildCaBundle,
  PLACEHOLDER_PREFIX,
  ProcCallerResolver,
  SANDBOX_BUNDLE_PATH,
  SANDBOX_CA_PATH,
  sandboxProxyEnv,
  TlsAuthority,
  type BudgetLimits,
  type CallerQuery,
  type CallerResolver,
  type CallerResult,
  type EgressProxy,
  type HeldBy,
  type SandboxProxy,
} from '../proxy/index.js';
import type { SandboxIdentity } from '../sandbox/identity/identity.js';
import type { NetworkAttachment } from '../sandbox/sandbox.js';

const O_PATH = 0o10000000;
const SOCKET_NAME = 'proxy.sock';

/** Answers "which process made this connection" once the sandbox's init pid is known. */
class SandboxCallerResolver implements CallerResolver {
  private inner: CallerResolver | null = null;

  bind(initPid: number): void {
    this.inner?.close?.();
    // The sandbox's own procfs, seen from the host, shows executables by their in-sandbox paths.
    this.inner = new ProcCallerResolver({ netPid: initPid, sandboxProc: `/proc/${initPid}/root/proc` });
  }

  close(): void {
    this.inner?.close?.();
    this.inner = null;
  }

  resolve(query: CallerQuery): Promise<CallerResult> {
    if (!this.inner) return Promise.resolve({ ok: false, reason: 'the sandbox has not started' });
    return this.inner.resolve(query);
  }
}

export interface SandboxNetworkOptions {
  proxy: EgressProxy;
  /** A `carapace run` or a gateway's sandbox: which commands a denial's hint names. */
  heldBy: HeldBy;
  /** Directory for the sandbox's socket directory (one subdirectory per sandbox). */
  runDir: string;
  generation: PolicyGeneration;
  /** Credential values by name; the agent sees placeholders. */
  credentials: ReadonlyMap<string, string>;
  /** The sandbox's limits: what the proxy may spend on it derives from them (docs/proxy.md). */
  limits?: BudgetLimits | undefined;
  /** Receives the attached proxy, e.g. to hot-reload its policy. */
  onAttached?: (sandbox: SandboxProxy) => void;
  /**
   * Where the sandbox's CA key is kept (0600), so that a sandbox that outlives this process keeps
   * trusting the proxy's certificates; without it the CA lives and dies with this process.
   */
  caDir?: string | undefined;
  /**
   * Attach again a sandbox that runs already (a restarted gateway re-adopting it): its socket
   * directory is the one its relay holds an fd of, so it is kept and only the socket made anew.
   */
  reattach?: boolean | undefined;
}

/** A NetworkProvider (see sandbox.ts) backed by an in-process egress proxy. */
export function egressNetwork(opts: SandboxNetworkOptions) {
  return async (name: string, identity: SandboxIdentity): Promise<NetworkAttachment> => {
    const dir = join(opts.runDir, 'net', name);
    if (!opts.reattach) {
      rmSync(dir, { recursive: true, force: true });
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      if (!identity.rootless) chownSync(dir, identity.uid, identity.gid);
    }
    const authority = TlsAuthority.create({ sandbox: name, stateDir: opts.caDir });
    const resolver = new SandboxCallerResolver();
    const attached = await opts.proxy.attachSandbox({
      name,
      heldBy: opts.heldBy,
      socketPath: join(dir, SOCKET_NAME),
      socketOwner: identity.rootless ? undefined : { uid: identity.uid, gid: identity.gid },
      generation: opts.generation,
      callerResolver: resolver,
      credentials: opts.credentials,
      authority,
      limits: opts.limits,
    });
    opts.onAttached?.(attached);
    const relayDir = openSync(dir, O_PATH | constants.O_DIRECTORY);
    const env: Record<string, string> = sandboxProxyEnv();
    for (const credential of opts.credentials.keys()) env[credential] = `${PLACEHOLDER_PREFIX}${credential}`;
    return {
      relayDir,
      hostDir: dir,
      socketName: SOCKET_NAME,
      env,
      files: () => [
        { path: SANDBOX_CA_PATH, content: authority.caPem },
        { path: SANDBOX_BUNDLE_PATH, content: buildCaBundle(authority.caPem) },
      ],
      started: (initPid, cgroup) => {
        resolver.bind(initPid);
        if (cgroup) attached.adoptPumpsWith((pid) => cgroup.enter(pid));
      },
      close: async () => {
        closeSync(relayDir);
        try {
          await attached.detach();
        } finally {
          resolver.close();
        }
        rmSync(dir, { recursive: true, force: true });
      },
      suspend: async () => {
        // The sandbox lives on without this process: its relay keeps the directory's fd, and
        // the next gateway listens in it again (reattach).
        closeSync(relayDir);
        try {
          await attached.detach();
        } finally {
          resolver.close();
        }
      },
    };
  };
}
