/** `carapace blueprint …` as a user runs it (build first): one line per problem, exit codes, the store. */
import {
  appendFileSync,
  cpSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { carapace, freshHome, REPO } from '../helpers/cli.js';

function copyOfShell(name = 'myshell'): string {
  const dir = join(mkdtempSync(join(tmpdir(), 'carapace-bp-')), name);
  cpSync(join(REPO, 'blueprints', 'shell'), dir, { recursive: true });
  const manifest = join(dir, 'blueprint.yaml');
  writeFileSync(manifest, readFileSync(manifest, 'utf8').replace(/^name: shell$/m, `name: ${name}`));
  return dir;
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
});
