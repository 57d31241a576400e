/**
 * The runtime (src/runtime/): sandboxes as state machines under one runtime, on real sandboxes
 * through the bubblewrap driver. stop(grace) is SIGTERM, then everything killed.
 */
import { chmodSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { MemoryAuditLog } from '../../src/audit/index.js';
import { loadPolicyFile, resolveLimits } from '../../src/policy/index.js';
import { BubblewrapDriver, type BubblewrapSandbox } from '../../src/runtime/bubblewrap-driver.js';
import type { SandboxState } from '../../src/runtime/driver.js';
import { defaultPolicyPath } from '../../src/runtime/one-off-run.js';
import { settingsFromPolicy } from '../../src/runtime/policy-settings.js';
import { Runtime } from '../../src/runtime/runtime.js';
import { specFromSettings } from '../../src/runtime/sandbox-spec-from-policy.js';
import { hostIdentities } from '../../src/sandbox/identity/identity.js';
import { newSandboxName, sandboxPaths } from '../../src/sandbox/sandbox.js';
import { stateDirs } from '../../src/sandbox/state-dirs.js';
import { freshHome } from '../helpers/cli.js';

function runtimeIn(home = freshHome()) {
  chmodSync(home, 0o711);
  const dirs = stateDirs({ CARAPACE_HOME: home });
  const runtime = new Runtime({
    driver: new BubblewrapDriver({ dirs, identities: hostIdentities() }),
    audit: new MemoryAuditLog(),
  });
  const policy = loadPolicyFile(defaultPolicyPath());
  const settings = settingsFromPolicy(policy, resolveLimits(policy));
  const start = (command: string[], id = newSandboxName(), onSpawned?: () => void) =>
    runtime.start(
      {
        spec: specFromSettings(settings, {
          name: id,
          workspace: sandboxPaths(dirs, id).defaultWorkspace,
          env: {},
          mounts: [],
          command,
        }),
        ownerUid: process.getuid?.() ?? 0,
        ephemeral: true,
        removeWorkspace: true,
        bestEffortLimits: false,
        stdio: 'pipe',
      },
      onSpawned,
    );
  return { runtime, start };
}

describe('runtime', () => {
  it('follows a sandbox creating → running → stopped, with its exit status', async () => {
    const { runtime, start } = runtimeIn();
    // Listen from the moment the sandbox exists: `exit 7` may be over before start() returns.
    const id = newSandboxName();
    const seen: SandboxState[] = [];
    const { managed, started } = await start(['sh', '-c', 'exit 7'], id, () => {
      seen.push(runtime.get(id)!.state);
      runtime.get(id)!.onChange((c) => seen.push(c.to));
    });
    expect(await started.exited).toBe(7);
    await started.release();
    expect(seen).toEqual(['creating', 'running', 'stopped']);
    expect(managed.exitCode).toBe(7);
    expect(runtime.list().map((s) => s.id)).toEqual([managed.id]);
    runtime.forget(managed.id);
    expect(runtime.list()).toEqual([]);
    await runtime.close();
  });

  it('stop(grace): SIGTERM reaches the agent first; one that ignores it is killed after the grace', async () => {
    const { runtime, start } = runtimeIn();
    const polite = await start(['sleep', '60']);
    const changes: string[] = [];
    polite.managed.onChange((c) => changes.push(`${c.from}→${c.to}`));
    expect(await polite.managed.stop(30_000)).toBe(128 + 15);
    expect(changes).toEqual(['running→stopping', 'stopping→stopped']);
    await polite.started.release();

    const stubborn = await start(['sh', '-c', 'trap "" TERM; echo ready; while :; do sleep 1; done']);
    // Once the trap is set (the shell says so), SIGTERM is ignored.
    const out = (stubborn.started as BubblewrapSandbox).started.process.stdout!;
    await new Promise<void>((resolve) =>
      out.on('data', (d: Buffer) => String(d).includes('ready') && resolve()),
    );
    expect(await stubborn.managed.stop(300)).toBe(128 + 9);
    expect(stubborn.managed.state).toBe('stopped');
    await stubborn.started.release();
    await runtime.close();
  });

  it('refuses to start a sandbox that runs already, and to stop one that does not', async () => {
    const { runtime, start } = runtimeIn();
    const id = newSandboxName();
    const first = await start(['sleep', '60'], id);
    await expect(start(['true'], id)).rejects.toMatchObject({ code: 'SANDBOX_BUSY' });
    await first.managed.stop(5_000);
    await first.started.release();
    // Stopped: a second stop answers with the recorded status instead of failing.
    expect(await first.managed.stop(5_000)).toBe(128 + 15);
    await runtime.close();
  });
});
