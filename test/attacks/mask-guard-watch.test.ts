/**
 * The mask guard's watches follow the host's directories (src/sandbox/mounts/mask-guard.ts). A masked
 * name below a directory the host replaces in two steps (moved away, then a new one moved in: an
 * `mv` of a backup, a package that swaps a configuration directory) must still be watched in the
 * new directory, or the next rename there detaches the mask for good and the sandbox reads the
 * host's file until it restarts (docs/security.md, "A host file replaced while a sandbox runs").
 */
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { MaskCheck } from '../../src/sandbox/mounts/mask-guard.js';
import { freshHome, REPO } from '../helpers/cli.js';
import {
  hostTreePolicy,
  replaceOnHost,
  restoredWithin,
  runStarter,
  writeStarter,
} from '../helpers/mask-guard.js';
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

describe('the mask guard after the host replaced a directory', () => {
  it('a directory moved away and a new one moved in: a later rename in the new one is masked again', async (ctx) => {
    requires(ctx, 'root');
    const dir = sharedTempDir('carapace-hostdir-');
    chmodSync(dir, 0o755);
    const sub = join(dir, 'sub');
    mkdirSync(sub, { mode: 0o755 });
    const conf = join(sub, 'conf');
    const other = join(dir, 'other');
    writeFileSync(conf, 'the host\n', { mode: 0o644 });
    writeFileSync(other, 'the host\n', { mode: 0o644 });
    const policy = hostTreePolicy(dir);
    const checks: MaskCheck[] = [];
    held = await startHeld(['sleep', '600'], {
      policy,
      files: [
        { path: conf, content: 'the sandbox\n' },
        { path: other, content: 'the sandbox too\n' },
      ],
      onMaskCheck: (c) => checks.push(c),
    });
    const cat = async (p: string) => (await run(held!.started.control!.exec({ argv: ['cat', p] }))).stdout;
    expect(await cat(conf)).toBe('the sandbox\n');

    // Step 1: the directory goes away. `other` is renamed after it in the same watched directory,
    // so once its restore is reported, the guard has seen `sub` leave (events come in order).
    renameSync(sub, `${sub}.old`);
    let from = checks.length;
    replaceOnHost(other, 'the host, replaced\n');
    expect(await restoredWithin(checks, other, 10_000, from)).not.toBeNull();

    // Step 2: a new directory with the host's file comes in: masked by the check it causes.
    mkdirSync(`${sub}.new`, { mode: 0o755 });
    writeFileSync(join(`${sub}.new`, 'conf'), 'the host, new directory\n', { mode: 0o644 });
    from = checks.length;
    renameSync(`${sub}.new`, sub);
    expect(await restoredWithin(checks, conf, 10_000, from)).not.toBeNull();
    expect(await cat(conf)).toBe('the sandbox\n');

    // Step 3: the host replaces the file in the new directory: the guard must see it there.
    from = checks.length;
    replaceOnHost(conf, 'the host, replaced in the new directory\n');
    expect(await restoredWithin(checks, conf, 10_000, from)).not.toBeNull();
    expect(await cat(conf)).toBe('the sandbox\n');
  });

  it('a directory two levels up replaced: a rename below it is masked again', async (ctx) => {
    requires(ctx, 'root');
    const dir = sharedTempDir('carapace-hostdir-');
    chmodSync(dir, 0o755);
    const conf = join(dir, 'a', 'b', 'conf');
    mkdirSync(join(dir, 'a', 'b'), { recursive: true, mode: 0o755 });
    writeFileSync(conf, 'the host\n', { mode: 0o644 });
    const policy = hostTreePolicy(dir);
    const checks: MaskCheck[] = [];
    held = await startHeld(['sleep', '600'], {
      policy,
      files: [{ path: conf, content: 'the sandbox\n' }],
      onMaskCheck: (c) => checks.push(c),
    });
    const cat = async () => (await run(held!.started.control!.exec({ argv: ['cat', conf] }))).stdout;
    // The host swaps in a whole new `a` (with its own b/conf): the old one aside, the new one in.
    mkdirSync(join(dir, 'a.new', 'b'), { recursive: true, mode: 0o755 });
    writeFileSync(join(dir, 'a.new', 'b', 'conf'), 'the host, new tree\n', { mode: 0o644 });
    let from = checks.length;
    renameSync(join(dir, 'a'), join(dir, 'a.old'));
    renameSync(join(dir, 'a.new'), join(dir, 'a'));
    expect(await restoredWithin(checks, conf, 10_000, from)).not.toBeNull();
    expect(await cat()).toBe('the sandbox\n');
    // Then replaces the file in the new tree's b: the guard must watch the new b, not the old one.
    from = checks.length;
    replaceOnHost(conf, 'the host, replaced in the new tree\n');
    expect(await restoredWithin(checks, conf, 10_000, from)).not.toBeNull();
    expect(await cat()).toBe('the sandbox\n');
  });

  it("rootless: an agent that uses up its user's inotify instances cannot leave a later sandbox of that user silently unguarded", async (ctx) => {
    requires(ctx, 'root', 'unprivileged-userns'); // root to become a user of its own for the test
    // A uid no one has: its inotify limits are this test's alone (the agent fills them).
    let uid = 64000 + (process.pid % 1000);
    while (spawnSync('id', [String(uid)]).status === 0) uid++;
    const as = { uid, gid: uid };
    const cli = join(REPO, 'dist', 'cli', 'carapace.js');
    if (spawnSync('test', ['-r', cli], as).status !== 0)
      ctx.skip(`${REPO} is not readable by an unprivileged user (a checkout under a private directory)`);
    if (spawnSync('test', ['-x', '/usr/bin/python3']).status !== 0)
      ctx.skip('needs /usr/bin/python3 for the agent');
    const home = freshHome();
    chmodSync(home, 0o755);
    spawnSync('chown', ['-R', `${uid}:${uid}`, home]);
    const dir = sharedTempDir('carapace-hostdir-');
    chmodSync(dir, 0o755);
    const conf = join(dir, 'conf');
    writeFileSync(conf, 'the host\n', { mode: 0o644 });
    const policy = hostTreePolicy(dir, join(home, 'policy.yaml'));
    const env = (name: string) => ({
      PATH: '/usr/local/bin:/usr/bin:/bin',
      HOME: home,
      CARAPACE_HOME: join(home, name),
    });
    // The agent: every inotify instance it can get, held. They count against its user outside too.
    const agent = spawn(
      process.execPath,
      [
        cli,
        'run',
        '--policy',
        policy,
        '--',
        '/usr/bin/python3',
        '-c',
        [
          'import ctypes, time',
          'libc = ctypes.CDLL(None, use_errno=True)',
          'n = 0',
          'while libc.inotify_init1(0) >= 0: n += 1',
          "print('opened', n, ctypes.get_errno(), flush=True)",
          'time.sleep(120)',
        ].join('\n'),
      ],
      { ...as, env: env('a'), stdio: ['ignore', 'pipe', 'pipe'], detached: true },
    );
    try {
      const opened = await new Promise<string>((resolve) => {
        let out = '';
        agent.stdout.setEncoding('utf8').on('data', (d: string) => {
          out += d;
          if (out.includes('\n')) resolve(out);
        });
        agent.on('exit', () => resolve(out));
      });
      if (!/^opened \d+ 24$/.test(opened.trim()))
        ctx.skip(`the agent could not use up the instances: ${opened}`);

      // A later sandbox of the same user, started by a process of its own (as a second
      // `carapace run` or a gateway restart would be), with a mask over the host tree.
      const script = writeStarter(
        join(home, 'later.mjs'),
        {
          home: join(home, 'b'),
          name: 'later',
          command: ['sleep', '600'],
          policy,
          files: [{ path: conf, content: 'the sandbox\n' }],
          rootless: true,
        },
        'console.log(JSON.stringify({ checks }));',
      );
      const { stdout: out, stderr: err, code } = await runStarter(script, { as, cwd: home, env: env('b') });
      expect(err).toBe('');
      expect(code).toBe(0);
      const result = JSON.parse(out) as { checks: MaskCheck[] };
      // Said at the start: the masks there are not kept (the audit's mask-lost).
      expect(result.checks.flatMap((c) => c.failed)).toEqual(
        expect.arrayContaining([
          expect.stringMatching(new RegExp(`^${dir}: cannot be watched \\(EMFILE\\)`)),
        ]),
      );
    } finally {
      try {
        process.kill(-agent.pid!, 'SIGTERM');
      } catch {
        // gone
      }
      await new Promise((resolve) => (agent.exitCode !== null ? resolve(null) : agent.on('exit', resolve)));
    }
  });
});

describe('a policy that lists a masked file itself', () => {
  it('read_only names the file, not its directory: the host rename over it does not take the sandbox its file for good', async (ctx) => {
    requires(ctx, 'root');
    const dir = sharedTempDir('carapace-hostdir-');
    chmodSync(dir, 0o755);
    const conf = join(dir, 'conf');
    writeFileSync(conf, 'the host, old\n', { mode: 0o644 });
    const policy = join(sharedTempDir(), 'policy.yaml');
    // As a policy lists /etc/passwd or /etc/hosts alone, without /etc.
    writeFileSync(
      policy,
      [
        'version: 1',
        'filesystem_policy:',
        `  read_only: [/usr, /lib, /lib64, /bin, /etc, ${conf}]`,
        '  read_write: [/sandbox, /tmp]',
        '',
      ].join('\n'),
    );
    held = await startHeld(['sleep', '600'], { policy, files: [{ path: conf, content: 'the sandbox\n' }] });
    const cat = async () => (await run(held!.started.control!.exec({ argv: ['cat', conf] }))).stdout;
    expect(await cat()).toBe('the sandbox\n');
    replaceOnHost(conf, 'the host, replaced\n');
    // The kernel detaches a mount on the replaced name at the rename itself: no check could
    // bind the file again on a name that is gone (the listed bind's root, now a deleted file).
    expect(await cat()).toBe('the sandbox\n');
  });
});

describe('the host renaming one masked name over and over', () => {
  it('a rename between the check opening the name and binding on it: bound on the new one, never a false mask-lost', async (ctx) => {
    requires(ctx, 'root');
    const dir = sharedTempDir('carapace-hostdir-');
    chmodSync(dir, 0o755);
    const conf = join(dir, 'conf');
    writeFileSync(conf, 'the host\n', { mode: 0o644 });
    const policy = hostTreePolicy(dir);
    const checks: MaskCheck[] = [];
    held = await startHeld(['sleep', '600'], {
      policy,
      files: [{ path: conf, content: 'the sandbox\n' }],
      onMaskCheck: (c) => checks.push(c),
    });
    // Renames as fast as the host can make them, yielding now and then so checks run between.
    for (let i = 0; i < 3000; i++) {
      replaceOnHost(conf, `the host, ${i}\n`);
      if (i % 100 === 0) await new Promise((resolve) => setImmediate(resolve));
    }
    const from = checks.length;
    replaceOnHost(conf, 'the host, last\n');
    expect(await restoredWithin(checks, conf, 10_000, from)).not.toBeNull();
    expect(await run(held.started.control!.exec({ argv: ['cat', conf] }))).toMatchObject({
      stdout: 'the sandbox\n',
    });
    // Each check bound the mask on the name as it found it: a name renamed over under it is
    // opened again, not reported lost (the audit's mask-lost says: restart the sandbox).
    expect(checks.flatMap((c) => c.failed)).toEqual([]);
  });
});
