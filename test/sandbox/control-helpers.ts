/**
 * Sandboxes started through the library the way a gateway holds them: with a control socket, and
 * optionally a log file and detached (src/sandbox/sandbox.ts, StartOptions).
 */
import { chmodSync } from 'node:fs';
import { defaultPolicyPath } from '../../src/runtime/one-off-run.js';
import { settingsFromPolicy } from '../../src/runtime/policy-settings.js';
import { specFromSettings } from '../../src/runtime/sandbox-spec-from-policy.js';
import { loadPolicyFile, resolveLimits } from '../../src/policy/index.js';
import type { ExecProcess } from '../../src/sandbox/control/control.js';
import { hostIdentities } from '../../src/sandbox/identity/identity.js';
import { agentStarted } from '../../src/sandbox/launch/running-sandbox.js';
import {
  newSandboxName,
  sandboxPaths,
  startSandbox,
  type StartedSandbox,
  type StartOptions,
} from '../../src/sandbox/sandbox.js';
import { stateDirs, type StateDirs } from '../../src/sandbox/state-dirs.js';
import { freshHome } from '../helpers/cli.js';

export interface HeldSandbox {
  started: StartedSandbox;
  dirs: StateDirs;
  home: string;
}

/** Starts `command` under `policy` (default: the default policy) with a control socket. */
export async function startHeld(
  command: string[],
  opts: Partial<StartOptions> & {
    policy?: string;
    home?: string;
    name?: string;
    /** Files written for the sandbox and bound read-only inside (SandboxSpec.files). */
    files?: { path: string; content: string }[];
  } = {},
): Promise<HeldSandbox> {
  const home = opts.home ?? freshHome();
  chmodSync(home, 0o711); // the sandbox uids pass through it to their runtime files
  const dirs = stateDirs({ CARAPACE_HOME: home });
  const name = opts.name ?? newSandboxName();
  const policy = loadPolicyFile(opts.policy ?? defaultPolicyPath());
  const spec = specFromSettings(settingsFromPolicy(policy, resolveLimits(policy)), {
    name,
    workspace: sandboxPaths(dirs, name).defaultWorkspace,
    env: {},
    mounts: [],
    command,
  });
  spec.files.push(...(opts.files ?? []));
  const started = await startSandbox(spec, {
    dirs,
    identities: hostIdentities(),
    ephemeral: true,
    removeWorkspace: true,
    bestEffortLimits: false,
    stdio: 'pipe',
    control: true,
    ...opts,
  });
  started.process.stdin?.end();
  if (!(await agentStarted(started.process))) {
    await started.cleanup();
    throw new Error(`the sandbox did not start: ${JSON.stringify(started.process.events)}`);
  }
  return { started, dirs, home };
}

/** Everything a stream gives until its end. */
export async function collect(stream: NodeJS.ReadableStream): Promise<string> {
  let text = '';
  for await (const chunk of stream) text += String(chunk);
  return text;
}

export async function run(p: ExecProcess): Promise<{ stdout: string; stderr: string; code: number }> {
  const [stdout, stderr, code] = await Promise.all([collect(p.stdout), collect(p.stderr), p.exited]);
  return { stdout, stderr, code };
}
