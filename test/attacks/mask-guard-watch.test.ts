/**
 * The mask guard's watches follow the host's directories (src/sandbox/mask-guard.ts). A masked
 * name below a directory the host replaces in two steps (moved away, then a new one moved in: an
 * `mv` of a backup, a package that swaps a configuration directory) must still be watched in the
 * new directory, or the next rename there detaches the mask for good and the sandbox reads the
 * host's file until it restarts (docs/security.md, "A host file replaced while a sandbox runs").
 */
import { chmodSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { MaskCheck } from '../../src/sandbox/mask-guard.js';
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

/** The first check from index `from` on that restored `target`, or null after `ms` (a bound, not a timing assertion). */
function restoredWithin(
  checks: MaskCheck[],
  target: string,
  ms: number,
  from: number,
): Promise<MaskCheck | null> {
  return new Promise((resolve) => {
    const deadline = Date.now() + ms;
    const look = () => {
      const hit = checks.slice(from).find((c) => c.restored.includes(target));
      if (hit || Date.now() > deadline) resolve(hit ?? null);
      else setTimeout(look, 20);
    };
    look();
  });
}

function replaceOnHost(path: string, content: string): void {
  writeFileSync(`${path}.new`, content, { mode: 0o644 });
  renameSync(`${path}.new`, path);
}

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
    const policy = join(sharedTempDir(), 'policy.yaml');
    writeFileSync(
      policy,
      [
        'version: 1',
        'filesystem_policy:',
        `  read_only: [/usr, /lib, /lib64, /bin, /etc, ${dir}]`,
        '  read_write: [/sandbox, /tmp]',
        '',
      ].join('\n'),
    );
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
    const policy = join(sharedTempDir(), 'policy.yaml');
    writeFileSync(
      policy,
      [
        'version: 1',
        'filesystem_policy:',
        `  read_only: [/usr, /lib, /lib64, /bin, /etc, ${dir}]`,
        '  read_write: [/sandbox, /tmp]',
        '',
      ].join('\n'),
    );
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
});
