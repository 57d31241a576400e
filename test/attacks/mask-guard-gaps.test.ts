/**
 * Where the mask guard (src/sandbox/mounts/mask-guard.ts, native/carapace-mask.c) could let go of a mask
 * for good or say too much (docs/security.md, "A host file replaced while a sandbox runs"):
 * - the host puts another kind of file where a mask was (a directory for a masked file, a file for
 *   a masked directory): no source of that kind could be bound, and the host's content showed;
 * - carapace-mask cannot be started for a while: the guard gave up on the sandbox;
 * - a host that replaces its files often: one audit finding per rename buried the trail;
 * - the init's start time, which names the process the guard enters, was read after it ran.
 */
import { spawnSync } from 'node:child_process';
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  renameSync,
  rmSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { MemoryAuditLog } from '../../src/audit/index.js';
import { loadPolicyFile, resolveLimits } from '../../src/policy/index.js';
import { BubblewrapDriver } from '../../src/runtime/bubblewrap-driver.js';
import { settingsFromPolicy } from '../../src/runtime/policy-settings.js';
import { Runtime } from '../../src/runtime/runtime.js';
import { specFromSettings } from '../../src/runtime/sandbox-spec-from-policy.js';
import { SandboxControl } from '../../src/sandbox/control/control.js';
import { hostIdentities } from '../../src/sandbox/identity/identity.js';
import type { MaskCheck } from '../../src/sandbox/mounts/mask-guard.js';
import { nativeMasker } from '../../src/sandbox/native-paths.js';
import { processStart } from '../../src/sandbox/processes.js';
import { readRunRecord } from '../../src/sandbox/sandbox-lock.js';
import { newSandboxName, sandboxPaths } from '../../src/sandbox/sandbox.js';
import { stateDirs } from '../../src/sandbox/state-dirs.js';
import { freshHome } from '../helpers/cli.js';
import { hostTree, replaceOnHost, restoredWithin } from '../helpers/mask-guard.js';
import { requires } from '../helpers/premises.js';
import { sharedTempDir } from '../helpers/sandbox.js';
import { run, startHeld, type HeldSandbox } from '../sandbox/control-helpers.js';

let held: HeldSandbox | undefined;
afterEach(async () => {
  if (held) {
    held.started.process.signal('SIGKILL');
    await held.started.process.exited;
    await held.started.cleanup();
  }
  held = undefined;
});

const inside = (argv: string[]) => run(held!.started.control!.exec({ argv }));

/** carapace-mask run by hand on the held sandbox: its output lines. */
function maskByHand(args: string[]): string[] {
  const p = held!.started.process;
  const r = spawnSync(nativeMasker(), ['--pid', String(p.initPid), '--start', String(p.initStart), ...args], {
    encoding: 'utf8',
    env: {},
  });
  expect(r.stderr).toBe('');
  return r.stdout.trim().split('\n');
}

describe('the host puts another kind of file where a mask was', () => {
  it('a masked file made a directory: an empty one masks it (its content never shows); a file again is masked as before', async (ctx) => {
    requires(ctx, 'root');
    const { dir, policy } = hostTree();
    const conf = join(dir, 'conf');
    const checks: MaskCheck[] = [];
    held = await startHeld(['sleep', '600'], {
      policy,
      files: [{ path: conf, content: 'the sandbox\n' }],
      onMaskCheck: (c) => checks.push(c),
    });
    expect((await inside(['cat', conf])).stdout).toBe('the sandbox\n');

    // Without the fallback the bind of the file fails on the directory: mask-lost, and the
    // directory, secret and all, in plain view until the sandbox restarts.
    let from = checks.length;
    mkdirSync(`${conf}.new`, { mode: 0o755 });
    writeFileSync(join(`${conf}.new`, 'secret'), 'the host, a secret\n', { mode: 0o644 });
    unlinkSync(conf);
    renameSync(`${conf}.new`, conf);
    expect(await restoredWithin(checks, conf, 10_000, from, 'emptied')).not.toBeNull();
    expect(await inside(['ls', '-A', conf])).toMatchObject({ stdout: '', code: 0 });
    expect((await inside(['cat', join(conf, 'secret')])).stderr).toMatch(/No such file or directory/);
    expect(checks.flatMap((c) => c.failed)).toEqual([]);

    // A file again: the sandbox's own file again.
    from = checks.length;
    rmSync(conf, { recursive: true });
    replaceOnHost(conf, 'the host, a file again\n');
    expect(await restoredWithin(checks, conf, 10_000, from)).not.toBeNull();
    expect((await inside(['cat', conf])).stdout).toBe('the sandbox\n');
  });

  it('carapace-mask: a directory masked by a fresh empty read-only tmpfs, kept as is, and a file put there masked by the unreadable one', async (ctx) => {
    requires(ctx, 'root');
    const { dir, policy } = hostTree();
    const secrets = join(dir, 'secrets');
    mkdirSync(secrets, { mode: 0o755 });
    writeFileSync(join(secrets, 'key'), 'the host, a key\n', { mode: 0o644 });
    held = await startHeld(['sleep', '600'], { policy });
    const fileMask = ['--file-mask', '/.carapace/masked', '--'];
    expect((await inside(['cat', join(secrets, 'key')])).stdout).toBe('the host, a key\n');

    expect(maskByHand([...fileMask, 'empty-dir', secrets])).toEqual([`masked ${secrets}`]);
    expect(await inside(['ls', '-A', secrets])).toMatchObject({ stdout: '', code: 0 });
    // Read-only: nothing can be put in it from inside.
    expect((await inside(['sh', '-c', `: > ${secrets}/planted`])).stderr).toMatch(
      /Read-only|Permission denied/,
    );
    expect(maskByHand([...fileMask, 'empty-dir', secrets])).toEqual([`kept ${secrets}`]);

    // The host makes it a file: the empty directory goes with the old one; the file is masked.
    rmSync(secrets, { recursive: true });
    writeFileSync(secrets, 'the host, a file now\n', { mode: 0o644 });
    expect(maskByHand([...fileMask, 'empty-dir', secrets])).toEqual([`emptied ${secrets}`]);
    expect((await inside(['cat', secrets])).stderr).toMatch(/Permission denied/);
    expect(maskByHand([...fileMask, 'empty-dir', secrets])).toEqual([`kept ${secrets}`]);

    // A directory on the way made a file: nothing is at the name any more, which is no failure.
    expect(maskByHand(['--', 'empty-dir', join(secrets, 'below')])).toEqual([
      `absent ${join(secrets, 'below')}`,
    ]);
  });
});

describe('carapace-mask that cannot be started', () => {
  it('is said once and tried again until it runs: the mask comes back', async (ctx) => {
    requires(ctx, 'root');
    const { dir, policy } = hostTree();
    const conf = join(dir, 'conf');
    // Where the guard looks for carapace-mask: nothing there yet (as after a failed upgrade).
    const masker = join(sharedTempDir(), 'carapace-mask');
    const checks: MaskCheck[] = [];
    held = await startHeld(['sleep', '600'], {
      policy,
      files: [{ path: conf, content: 'the sandbox\n' }],
      onMaskCheck: (c) => checks.push(c),
      masker,
    });
    replaceOnHost(conf, 'the host, replaced\n');
    const deadline = Date.now() + 10_000;
    while (!checks.some((c) => c.unavailable !== undefined) && Date.now() < deadline)
      await new Promise((resolve) => setTimeout(resolve, 20));
    expect(checks.map((c) => c.unavailable)).toEqual([expect.stringMatching(/cannot run .*ENOENT/)]);
    expect((await inside(['cat', conf])).stdout).toBe('the host, replaced\n');

    copyFileSync(nativeMasker(), masker);
    chmodSync(masker, 0o755);
    // The retries back off (1 s, 2 s, …): a bound on the wait, not a timing assertion.
    expect(await restoredWithin(checks, conf, 60_000)).not.toBeNull();
    expect((await inside(['cat', conf])).stdout).toBe('the sandbox\n');
    // Said once, however many tries failed.
    expect(checks.filter((c) => c.unavailable !== undefined)).toHaveLength(1);
  });
});

describe('mask-restored in the audit', () => {
  it('a host that replaces a masked file again and again: one finding at once, the rest counted into one', async (ctx) => {
    requires(ctx, 'root');
    const { dir, policy: policyFile } = hostTree();
    const conf = join(dir, 'conf');
    const home = freshHome();
    chmodSync(home, 0o711);
    const dirs = stateDirs({ CARAPACE_HOME: home });
    const audit = new MemoryAuditLog();
    const runtime = new Runtime({
      driver: new BubblewrapDriver({ dirs, identities: hostIdentities() }),
      audit,
    });
    const policy = loadPolicyFile(policyFile);
    const id = newSandboxName();
    const spec = specFromSettings(settingsFromPolicy(policy, resolveLimits(policy)), {
      name: id,
      workspace: sandboxPaths(dirs, id).defaultWorkspace,
      env: {},
      mounts: [],
      command: ['sleep', '600'],
      files: [{ path: conf, content: 'the sandbox\n' }],
    });
    const began = Date.now();
    const { managed, started } = await runtime.start({
      spec,
      ownerUid: 0,
      ephemeral: true,
      removeWorkspace: true,
      bestEffortLimits: false,
      stdio: 'pipe',
      control: true,
    });
    try {
      const control = new SandboxControl(join(sandboxPaths(dirs, id).runtime, 'control', 'control.sock'));
      const cat = async () => (await run(control.exec({ argv: ['cat', conf] }))).stdout;
      const renames = 5;
      for (let i = 0; i < renames; i++) {
        replaceOnHost(conf, `the host, ${i}\n`);
        // Each rename masked again before the next: one restoration each.
        const deadline = Date.now() + 10_000;
        while ((await cat()) !== 'the sandbox\n' && Date.now() < deadline)
          await new Promise((resolve) => setTimeout(resolve, 20));
      }
      expect(await cat()).toBe('the sandbox\n');
    } finally {
      await managed.stop(5_000);
      await started.release();
      await runtime.close();
    }
    // Only this file's: another test file's useradd lands /etc/passwd and the like here too.
    const restored = audit.events
      .filter((e) => (e.finding_info as { uid?: string } | undefined)?.uid === 'mask-restored')
      .map((e) => (e.unmapped.restorations as Record<string, number>)[conf])
      .filter((n) => n !== undefined);
    // Every restoration counted, in at most one finding per minute (and one when it stopped).
    expect(restored.reduce((a, b) => a + b, 0)).toBe(5);
    expect(restored[0]).toBe(1);
    expect(restored.length).toBeLessThanOrEqual(2 + Math.floor((Date.now() - began) / 60_000));
  });
});

describe("the init's start time", () => {
  it('is read while bwrap holds the init: a detached agent that exits at once still has its own on record', async (ctx) => {
    requires(ctx, 'root');
    held = await startHeld(['sleep', '600'], { detached: true });
    const p = held.started.process;
    expect(p.initStart).toBeGreaterThan(0);
    expect(processStart(p.initPid)).toBe(p.initStart);
    const record = readRunRecord(join(held.dirs.run, 'sandboxes', `${held.started.spec.name}.lock`));
    expect(record).toMatchObject({ pid: p.initPid, start: p.initStart });
    const quick = await startHeld(['true']);
    try {
      await quick.started.process.exited;
      expect(quick.started.process.initStart).toBeGreaterThan(0);
      // Only a sandbox that may be taken over writes down what its guard needs (adoptGuard).
      const guardFile = (h: HeldSandbox) =>
        existsSync(join(sandboxPaths(h.dirs, h.started.spec.name).runtime, 'guarded.json'));
      expect([guardFile(held), guardFile(quick)]).toEqual([true, false]);
    } finally {
      await quick.started.cleanup();
    }
  });
});
