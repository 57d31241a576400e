/**
 * Starts a sandbox through the library (src/sandbox/sandbox.ts), the way the gateway will: for
 * what `carapace run` cannot do yet, such as a relay to a host socket (the egress proxy is wired
 * in later), and for measuring the sandbox without the CLI's own start-up.
 */
import { once } from 'node:events';
import { chmodSync } from 'node:fs';
import { loadPolicyFile, resolveLimits } from '../../src/policy/index.js';
import { defaultPolicyPath } from '../../src/runtime/one-off-run.js';
import { settingsFromPolicy } from '../../src/runtime/policy-settings.js';
import { specFromSettings } from '../../src/runtime/sandbox-spec-from-policy.js';
import {
  newSandboxName,
  sandboxPaths,
  relayOnly,
  startSandbox,
  type StartedSandbox,
} from '../../src/sandbox/sandbox.js';
import { stateDirs } from '../../src/sandbox/state-dirs.js';
import { hostIdentities } from '../../src/sandbox/identity/identity.js';
import { freshHome } from './cli.js';

export interface LibrarySandboxOptions {
  policy?: string;
  home?: string;
  relay?: { dir: number; socketName: string };
}

export interface LibrarySandbox {
  started: StartedSandbox;
  /** Everything the agent wrote, once it has exited; and its exit code. */
  result: Promise<{ code: number; stdout: string; stderr: string }>;
}

export async function startLibrarySandbox(
  command: string[],
  opts: LibrarySandboxOptions = {},
): Promise<LibrarySandbox> {
  const home = opts.home ?? freshHome();
  // startSandbox opens CARAPACE_HOME to the sandbox uids only when it is the process's own.
  chmodSync(home, 0o711);
  const dirs = stateDirs({ CARAPACE_HOME: home });
  const name = newSandboxName();
  const policy = loadPolicyFile(opts.policy ?? defaultPolicyPath());
  const spec = specFromSettings(settingsFromPolicy(policy, resolveLimits(policy)), {
    name,
    workspace: sandboxPaths(dirs, name).defaultWorkspace,
    env: {},
    mounts: [],
    command,
  });
  const started = await startSandbox(spec, {
    dirs,
    identities: hostIdentities(),
    ephemeral: true,
    removeWorkspace: true,
    bestEffortLimits: false,
    stdio: 'pipe',
    network: opts.relay ? relayOnly(opts.relay.dir, opts.relay.socketName) : undefined,
  });
  let stdout = '';
  let stderr = '';
  started.process.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
  started.process.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  started.process.stdin?.end();
  const closed = [started.process.stdout, started.process.stderr].map((s) =>
    s ? once(s, 'close').catch(() => undefined) : undefined,
  );
  const result = started.process.exited.then(async ({ code }) => {
    await Promise.all(closed); // the last output may arrive after the exit
    started.cleanup();
    return { code, stdout, stderr };
  });
  return { started, result };
}
