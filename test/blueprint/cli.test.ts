/** `carapace blueprint …` as a user runs it (build first): one line per problem, exit codes, the store. */
import {
  appendFileSync,
  chmodSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ImageStore, imageId } from '../../src/blueprint/image.js';
import { loadBlueprintManifest } from '../../src/blueprint/manifest.js';
import { carapace, freshHome, REPO } from '../helpers/cli.js';

function copyOfShell(name = 'myshell', base = 'shell'): string {
  const dir = join(mkdtempSync(join(tmpdir(), 'carapace-bp-')), name);
  cpSync(join(REPO, 'blueprints', base), dir, { recursive: true });
  const manifest = join(dir, 'blueprint.yaml');
  writeFileSync(
    manifest,
    readFileSync(manifest, 'utf8').replace(new RegExp(`^name: ${base}$`, 'm'), `name: ${name}`),
  );
  return dir;
}

/** A signed copy of the shell blueprint installed in `home`, then its policy changed on disk there. */
function installThenChange(home: string): void {
  const dir = copyOfShell();
  expect(carapace(['blueprint', 'sign', dir], { home }).status).toBe(0);
  expect(carapace(['blueprint', 'install', dir], { home }).status).toBe(0);
  const stored = join(home, 'state', 'blueprints');
  const [copy] = readdirSync(stored).filter((n) => n.startsWith('sha256-'));
  chmodSync(join(stored, copy!), 0o755);
  chmodSync(join(stored, copy!, 'policy.yaml'), 0o644);
  appendFileSync(join(stored, copy!, 'policy.yaml'), '# changed\n');
}

describe('carapace blueprint', () => {
  it('every built-in blueprint verifies against its recorded digest (re-sign after editing one)', () => {
    for (const name of readdirSync(join(REPO, 'blueprints'))) {
      const r = carapace(['blueprint', 'verify', join(REPO, 'blueprints', name)]);
      expect(r.stderr).toBe('');
      expect(r.stdout).toMatch(new RegExp(`^ok: ${name} `));
    }
  });

  it('reports every mistake of a blueprint.yaml at file:line:col, exit 2', () => {
    const dir = copyOfShell();
    const manifest = join(dir, 'blueprint.yaml');
    writeFileSync(
      manifest,
      readFileSync(manifest, 'utf8')
        .replace('version: 1.0.0', 'version: latest')
        .replace('  home: /sandbox', '  hom: /sandbox'),
    );
    const r = carapace(['blueprint', 'sign', dir]);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('blueprint.yaml:4:10: "version": must be an exact version such as 1.2.3');
    expect(r.stderr).toMatch(/blueprint\.yaml:\d+:\d+: unknown key "hom" in agent \(did you mean "home"\?\)/);
    expect(existsSync(join(dir, 'blueprint.digest'))).toBe(true); // the shell's own, untouched
  });

  it('signs, verifies, installs (immutable, by digest), lists, shows and removes', () => {
    const home = freshHome();
    const keys = mkdtempSync(join(tmpdir(), 'carapace-keys-'));
    const dir = copyOfShell();
    expect(carapace(['blueprint', 'keygen', '--out', keys, '--name', 'me'], { home }).status).toBe(0);
    const signed = carapace(['blueprint', 'sign', dir, '--key', join(keys, 'me.key')], { home });
    expect(signed.status).toBe(0);
    const digest = signed.stdout.split(' ')[0]!.trim();
    expect(readFileSync(join(dir, 'blueprint.digest'), 'utf8').trim()).toBe(digest);

    const verified = carapace(['blueprint', 'verify', dir, '--trusted-keys', join(keys, 'me.pub')], { home });
    expect(verified.stdout).toMatch(/^ok: myshell 1\.0\.0 sha256:[0-9a-f]{64} \(signed by [0-9a-f]{16}\)/);

    const installed = carapace(['blueprint', 'install', dir], { home });
    expect(installed.status).toBe(0);
    expect(installed.stdout).toContain(`installed: myshell 1.0.0 ${digest}`);
    const stored = join(home, 'state', 'blueprints', digest.replace(':', '-'));
    expect(existsSync(join(stored, 'blueprint.yaml'))).toBe(true);

    const list = carapace(['blueprint', 'list', '-o', 'json'], { home });
    expect(JSON.parse(list.stdout)).toEqual([
      expect.objectContaining({ name: 'myshell', digest, status: 'unsigned' }),
    ]);
    expect(carapace(['blueprint', 'show', 'myshell'], { home }).stdout).toContain(`digest:     ${digest}`);

    // Trusting a key makes signatures required: the signed copy installs, an unsigned one does not.
    writeFileSync(join(home, 'state', 'trusted-keys'), readFileSync(join(keys, 'me.pub')));
    expect(carapace(['blueprint', 'verify', 'myshell'], { home }).stdout).toMatch(/signed by/);
    const unsigned = copyOfShell('other');
    expect(carapace(['blueprint', 'sign', unsigned], { home }).status).toBe(0);
    const refused = carapace(['blueprint', 'install', unsigned], { home });
    expect(refused.status).toBe(1);
    expect(refused.stderr.trim().split('\n')).toHaveLength(1);
    expect(refused.stderr).toMatch(/no trusted key signed this blueprint/);
    // The built-in ones are exempt (they are part of the installation), by digest.
    expect(carapace(['blueprint', 'install', 'shell'], { home }).status).toBe(0);

    const removed = carapace(['blueprint', 'remove', 'myshell'], { home });
    expect(removed.status).toBe(0);
    expect(existsSync(stored)).toBe(false);
  });

  it('shares one agent image between blueprints with the same pins, removed with the last of them', () => {
    const home = freshHome();
    const state = join(home, 'state');
    // Two blueprints that differ in name and description only: two digests, one image.
    const one = copyOfShell('claw-one', 'openclaw');
    const two = copyOfShell('claw-two', 'openclaw');
    const manifest = join(two, 'blueprint.yaml');
    writeFileSync(
      manifest,
      readFileSync(manifest, 'utf8').replace(/^description: .*$/m, 'description: another'),
    );
    const digests = [one, two].map((dir) => {
      const signed = carapace(['blueprint', 'sign', dir], { home });
      expect(signed.status).toBe(0);
      expect(carapace(['blueprint', 'install', dir], { home }).status).toBe(0);
      return signed.stdout.split(' ')[0]!.trim();
    });
    expect(new Set(digests).size).toBe(2);
    const id = imageId(loadBlueprintManifest(one).blueprint, process.arch === 'arm64' ? 'arm64' : 'x64');
    expect(imageId(loadBlueprintManifest(two).blueprint, 'x64')).toBe(
      imageId(loadBlueprintManifest(one).blueprint, 'x64'),
    );
    // The image as an install leaves it (its record), and one an earlier Carapace named by the
    // first blueprint's digest.
    const image = new ImageStore(state).path(id);
    mkdirSync(image, { recursive: true });
    writeFileSync(join(image, '.carapace-image.json'), JSON.stringify({ id }));
    const legacy = join(state, 'images', digests[0]!.replace(':', '-'));
    mkdirSync(legacy);
    const images = () =>
      (
        JSON.parse(carapace(['blueprint', 'list', '-o', 'json'], { home }).stdout) as {
          name: string;
          image: boolean;
        }[]
      )
        .filter((b) => b.name.startsWith('claw-'))
        .map((b) => [b.name, b.image]);
    expect(images().sort()).toEqual([
      ['claw-one', true],
      ['claw-two', true],
    ]);

    expect(carapace(['blueprint', 'remove', 'claw-one'], { home }).status).toBe(0);
    expect(existsSync(image)).toBe(true); // claw-two still has it
    expect(existsSync(legacy)).toBe(false);
    expect(images()).toEqual([['claw-two', true]]);
    expect(carapace(['blueprint', 'remove', 'claw-two'], { home }).status).toBe(0);
    expect(existsSync(image)).toBe(false);
  });

  it('refuses a tampered blueprint with one line, exit 1, and installs nothing', () => {
    const home = freshHome();
    const dir = copyOfShell();
    expect(carapace(['blueprint', 'sign', dir], { home }).status).toBe(0);
    appendFileSync(
      join(dir, 'policy.yaml'),
      'network_policies: { all: { name: all, endpoints: [{ host: "**.com", port: 443 }] } }\n',
    );
    const r = carapace(['blueprint', 'install', dir], { home });
    expect(r.status).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/do not match the recorded digest .* refusing it/);
    expect(carapace(['blueprint', 'list', '-o', 'json'], { home }).stdout.trim()).toBe('[]');
  });

  it('a blueprint that is not there: exit 3, as every other thing that is not there', () => {
    const r = carapace(['blueprint', 'verify', 'no-such-blueprint']);
    expect(r.status).toBe(3);
    expect(r.stderr).toBe(
      'carapace: no installed blueprint "no-such-blueprint" (carapace blueprint list shows them)\n',
    );
  });

  it('the fixes its messages name are real: sign for a missing digest; a stray key is "in the blueprint"', () => {
    const dir = copyOfShell();
    rmSync(join(dir, 'blueprint.digest'));
    const missing = carapace(['blueprint', 'verify', dir]);
    expect(missing.status).toBe(1);
    expect(missing.stderr).toContain(`carapace blueprint sign ${dir}`);
    // Every `carapace blueprint WORD` a message names is a command that exists.
    const help = carapace(['blueprint', '--help']).stdout;
    for (const [, word] of missing.stderr.matchAll(/carapace blueprint (\S+)/g))
      expect(help).toMatch(new RegExp(`^  ${word} `, 'm'));

    appendFileSync(join(dir, 'blueprint.yaml'), 'bogus_key: 1\n');
    const stray = carapace(['blueprint', 'sign', dir]);
    expect(stray.status).toBe(2);
    expect(stray.stderr).toMatch(/blueprint\.yaml:\d+:1: unknown key "bogus_key" in the blueprint;/);
    expect(stray.stderr).not.toContain('in the policy');
  });

  it('verify says whose signature it is when the key is not trusted, and that a built-in is built in', () => {
    const home = freshHome();
    const keys = mkdtempSync(join(tmpdir(), 'carapace-keys-'));
    const dir = copyOfShell();
    expect(carapace(['blueprint', 'keygen', '--out', keys, '--name', 'me'], { home }).status).toBe(0);
    const signed = carapace(['blueprint', 'sign', dir, '--key', join(keys, 'me.key')], { home });
    const id = /signed by ([0-9a-f]{16})/.exec(signed.stdout)![1]!;
    const untrusted = carapace(['blueprint', 'verify', dir], { home });
    expect(untrusted.status).toBe(0);
    expect(untrusted.stdout).toContain(`(signed by ${id}, not a trusted key)`);
    expect(untrusted.stdout).not.toContain('unsigned');
    const builtin = carapace(['blueprint', 'verify', join(REPO, 'blueprints', 'shell')], { home });
    expect(builtin.stdout).toMatch(/^ok: shell 1\.0\.0 sha256:[0-9a-f]{64} \(built-in\)/);
  });

  it('list shows an installed copy changed on disk as REFUSED, its reason on one line of stderr', () => {
    const home = freshHome();
    installThenChange(home);
    const listed = carapace(['blueprint', 'list'], { home });
    expect(listed.status).toBe(0);
    const row = listed.stdout.split('\n').find((l) => l.startsWith('myshell '))!;
    expect(row).toMatch(/\sREFUSED\s+-$/);
    for (const line of listed.stdout.split('\n')) expect(line.length).toBeLessThan(100);
    expect(listed.stderr.trim().split('\n')).toHaveLength(1);
    expect(listed.stderr).toMatch(
      /^carapace: myshell sha256:[0-9a-f]{64}: .*do not match the recorded digest/,
    );
  });

  it("list's line for a REFUSED copy escapes the path it quotes (a state directory with an escape sequence)", () => {
    const home = join(freshHome(), 'h\x1b]0;t\x07\u202ei');
    mkdirSync(home);
    installThenChange(home);
    const listed = carapace(['blueprint', 'list'], { home });
    expect(listed.status).toBe(0);
    expect(listed.stderr).toMatch(/^carapace: myshell sha256:[0-9a-f]{64}: [^\n]*\n$/);
    expect(listed.stderr).toContain('h\\x1b]0;t\\x07\\u{202e}i');
    for (const c of ['\x1b', '\x07', '\u202e']) expect(listed.stderr).not.toContain(c);
  });
});
