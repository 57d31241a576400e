/**
 * Issue 11: Carapace brings its own Node.js. The launcher (dist/cli/carapace.js, which ./install.sh
 * links onto PATH) names that Node by absolute path in its first line, so `carapace` works on a
 * PATH with no `node` at all, as on a machine whose system Node was removed after the install.
 */
import { spawnSync } from 'node:child_process';
import {
  accessSync,
  chmodSync,
  constants,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  realpathSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { carapaceNodePath } from '../scripts/carapace-node.js';
import { launcherHead } from '../scripts/launcher-head.js';
import { carapace, freshHome, REPO } from './helpers/cli.js';
import { requires } from './helpers/premises.js';

const LAUNCHER = join(REPO, 'dist', 'cli', 'carapace.js');
const NODE = carapaceNodePath(REPO);

/** Every executable named `cmd` on this process's PATH, in order. */
function onPath(cmd: string): string[] {
  return (process.env.PATH ?? '')
    .split(delimiter)
    .filter(Boolean)
    .map((dir) => join(dir, cmd))
    .filter((file) => {
      try {
        accessSync(file, constants.X_OK);
        return true;
      } catch {
        return false;
      }
    });
}

/** A directory holding only what `carapace` needs on PATH (bwrap) and the `carapace` link. */
function pathWithoutNode(): string {
  const bin = mkdtempSync(join(tmpdir(), 'carapace-path-'));
  chmodSync(bin, 0o755); // doctor runs bwrap as an unprivileged uid too
  const bwrap = onPath('bwrap')[0];
  if (!bwrap) throw new Error('bwrap is not on PATH (./install.sh installs bubblewrap)');
  symlinkSync(bwrap, join(bin, 'bwrap'));
  symlinkSync(join(REPO, 'native', 'carapace'), join(bin, 'carapace')); // as ./install.sh links /usr/local/bin/carapace
  return bin;
}

describe('the carapace launcher', () => {
  it("starts Carapace's Node by its absolute path, the one this test suite runs on", () => {
    expect(readFileSync(LAUNCHER, 'utf8').split('\n')[0]).toBe(`#!${NODE}`);
    expect(realpathSync(process.execPath)).toBe(realpathSync(NODE));
    expect(Number(process.versions.node.split('.')[0])).toBeGreaterThanOrEqual(24);
  });

  it('runs carapace doctor and carapace run with no node on PATH', () => {
    const bin = pathWithoutNode();
    const env = { PATH: bin, CARAPACE_HOME: freshHome() }; // and nothing else, as env -i
    expect(spawnSync('node', ['-e', '0'], { env }).error).toMatchObject({ code: 'ENOENT' });

    const doctor = spawnSync(join(bin, 'carapace'), ['doctor', '--json'], { env, encoding: 'utf8' });
    expect(doctor.stderr).toBe('');
    expect(doctor.status).toBe(0);
    const report = JSON.parse(doctor.stdout) as { carapace: { node: { version: string; path: string } } };
    expect(realpathSync(report.carapace.node.path)).toBe(realpathSync(NODE));
    expect(report.carapace.node.version).toBe(process.version);

    const run = spawnSync(join(bin, 'carapace'), ['run', '--', 'sh', '-c', 'echo ran in $(hostname)'], {
      env,
      encoding: 'utf8',
    });
    expect(run.stderr).toBe('');
    expect(run.status).toBe(0);
    expect(run.stdout).toMatch(/^ran in run-[0-9a-f]+\n$/);
    expect(spawnSync(join(bin, 'carapace'), ['run', '--', 'true'], { env }).status).toBe(0);
  });

  it('falls back to one sh exec where the path cannot be a #! line (whitespace, too long)', () => {
    const dir = mkdtempSync(join(tmpdir(), "carapace launcher's head "));
    const long = join(mkdtempSync(join(tmpdir(), 'carapace-')), 'x'.repeat(200), 'y'.repeat(50));
    for (const node of [join(dir, 'node'), join(long, 'node')]) {
      mkdirSync(join(node, '..'), { recursive: true });
      symlinkSync(NODE, node);
      const head = launcherHead(node);
      expect(head.startsWith('#!/bin/sh\n')).toBe(true);
      const script = join(dir, `script-${head.length}.js`);
      writeFileSync(script, `${head}process.stdout.write(process.argv.slice(2).join('|'));\n`);
      chmodSync(script, 0o755);
      const r = spawnSync(script, ['a b', "c'd", ''], { encoding: 'utf8' });
      expect(r.stderr).toBe('');
      expect(r.stdout).toBe("a b|c'd|");
    }
    expect(launcherHead('/opt/carapace/node')).toBe('#!/opt/carapace/node\n');
  });

  it('refuses an older Node.js with one line', (ctx) => {
    const older = onPath('node').find(
      (n) =>
        Number(spawnSync(n, ['-p', 'process.versions.node.split(".")[0]'], { encoding: 'utf8' }).stdout) < 24,
    );
    if (!older) return ctx.skip('no Node.js older than 24 on PATH to try');
    const r = spawnSync(older, [LAUNCHER, '--version'], { encoding: 'utf8' });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^carapace: needs Node\.js 24 or newer, not v\d+\.[^\n]*\n$/);
  });

  it("keeps V8's compile cache beside the code: no sandbox, no other uid can plant code in it", (ctx) => {
    requires(ctx, 'root');
    expect(carapace(['--version']).status).toBe(0); // this uid's cache is written by now
    const cache = join(REPO, 'dist', 'compile-cache');
    const mine = readdirSync(cache).find((d) => d.endsWith(`-${process.getuid!()}`));
    expect(mine, `no compile cache of uid ${process.getuid!()} in ${cache}`).toBeDefined();
    const dir = join(cache, mine!);
    expect(statSync(cache).mode & 0o777, `${cache} is not private to its owner`).toBe(0o700);
    for (const file of readdirSync(dir).map((f) => join(dir, f))) {
      expect(statSync(file).mode & 0o022, `${file} is writable by group or others`).toBe(0);
    }
    const plant = `echo planted > '${join(dir, 'planted')}'`;
    // Inside a sandbox the installation does not exist; on the host, another uid may not write.
    const inside = carapace(['run', '--', 'sh', '-c', plant]);
    expect(inside.status).not.toBe(0);
    expect(inside.stderr).toMatch(/No such file or directory|Directory nonexistent|Read-only file system/);
    const otherUid = spawnSync('sh', ['-c', plant], { uid: 65534, gid: 65534, encoding: 'utf8' });
    expect(otherUid.status).not.toBe(0);
    expect(otherUid.stderr).toMatch(/Permission denied/);
    // Baseline: the path is real, and its owner writes there.
    expect(spawnSync('sh', ['-c', `${plant} && rm '${join(dir, 'planted')}'`]).status).toBe(0);
  });
});
