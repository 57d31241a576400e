/** `carapace policy …` run as a real process (build first: `npm run build`). */
import { copyFileSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { carapace } from '../helpers/cli.js';
import { COMPAT, POLICIES } from './helpers.js';

const SANDBOX = join(COMPAT, 'nemoclaw', 'openclaw-sandbox.yaml');

function tempFile(name: string, text: string): string {
  const file = join(mkdtempSync(join(tmpdir(), 'carapace-policy-')), name);
  writeFileSync(file, text);
  return file;
}

describe('carapace policy validate', () => {
  it('accepts policies and presets, one ok line each', () => {
    const r = carapace([
      'policy',
      'validate',
      SANDBOX,
      join(COMPAT, 'nemoclaw', 'presets', 'slack.yaml'),
      join(POLICIES, 'default.yaml'),
    ]);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout.trim().split('\n')).toEqual([
      `ok  ${SANDBOX} (policy, 9 network policies, 15 endpoints)`,
      `ok  ${join(COMPAT, 'nemoclaw', 'presets', 'slack.yaml')} (preset "slack", 1 network policy, 3 endpoints)`,
      `ok  ${join(POLICIES, 'default.yaml')} (policy, 0 network policies, 0 endpoints)`,
    ]);
  });

  it('prints every problem as file:line:col: message and exits 2', () => {
    const bad = tempFile(
      'bad.yaml',
      'version: 1\nnetwork_policies:\n  a:\n    endpoints:\n      - host: "*.com"\n        port: 0\n',
    );
    const r = carapace(['policy', 'validate', bad, join(POLICIES, 'default.yaml')]);
    expect(r.status).toBe(2);
    expect(r.stderr.trim().split('\n')).toEqual([
      `${bad}:5:15: host "*.com" puts a wildcard directly over the top-level domain "com"; name the domain, e.g. "*.example.com"`,
      `${bad}:6:15: port 0 is out of range; a TCP port is 1–65535`,
    ]);
    expect(r.stdout).toContain('ok  ');
  });

  it('warns, without failing, about a valid policy that cannot start a sandbox as written', () => {
    const root = tempFile('root.yaml', 'version: 1\nfilesystem_policy:\n  read_only: [/]\n');
    const nested = tempFile(
      'nested.yaml',
      'version: 1\nfilesystem_policy:\n  read_only: [/usr, /sandbox/.cfg]\n  read_write: [/sandbox, /usr/local/x, /sandbox/.cfg/y]\n',
    );
    const r = carapace(['policy', 'validate', root, nested]);
    expect(r.status).toBe(0);
    expect(r.stdout.trim().split('\n')).toEqual([
      `ok  ${root} (policy, 0 network policies, 0 endpoints)`,
      `ok  ${nested} (policy, 0 network policies, 0 endpoints)`,
    ]);
    // Under /sandbox Carapace makes the directories itself: only /usr/local/x is a problem.
    expect(r.stderr.trim().split('\n')).toEqual([
      `${root}:3:15: warning: "/" read-only cannot start: it is the host's root bound read-only, where bwrap cannot make /sandbox or /.carapace; list the directories the agent needs (e.g. /usr, /lib, /etc)`,
      `${nested}:4:26: warning: read_write "/usr/local/x" lies under read_only "/usr", the host's directory bound read-only: bwrap cannot make a mount point there, so the sandbox starts only where the host has /usr/local/x; list /usr's subdirectories instead, or move /usr/local/x elsewhere`,
    ]);
  });

  it('takes any token method, and warns about one no server knows, naming the nearest', () => {
    const rules =
      '        rules:\n' +
      '          - allow: { method: M-SEARCH, path: "/**" }\n' +
      '          - allow: { method: GTE, path: "/**" }\n' +
      '          - allow: { method: brew, path: "/**" }\n' +
      '          - allow: { method: "*", path: "/x" }\n' +
      '        deny_rules:\n' +
      '          - { method: delte, path: "/x" }\n';
    const head =
      'network_policies:\n  a:\n    endpoints:\n      - host: a.test\n        port: 80\n        protocol: rest\n';
    const policy = tempFile('methods.yaml', `version: 1\n${head}${rules}`);
    const preset = tempFile('methods-preset.yaml', `preset: { name: m }\n${head}${rules}`);
    const r = carapace(['policy', 'validate', policy, preset]);
    expect(r.status).toBe(0);
    const warnings = (file: string, first: number) => [
      `${file}:${first}:30: warning: method "GTE" is not a registered or common HTTP method (did you mean "GET"?): the rule matches only requests whose method is GTE`,
      `${file}:${first + 1}:30: warning: method "brew" is not a registered or common HTTP method: the rule matches only requests whose method is BREW`,
      `${file}:${first + 4}:23: warning: method "delte" is not a registered or common HTTP method (did you mean "DELETE"?): the rule matches only requests whose method is DELTE`,
    ];
    expect(r.stderr.trim().split('\n')).toEqual([...warnings(policy, 10), ...warnings(preset, 10)]);
  });

  it('says when a file cannot be read', () => {
    const r = carapace(['policy', 'validate', '/nonexistent/policy.yaml']);
    expect(r.status).toBe(2);
    expect(r.stderr).toBe('/nonexistent/policy.yaml: cannot read the policy file: no such file\n');
  });

  it('needs at least one file', () => {
    const r = carapace(['policy', 'validate']);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain("missing required argument 'files'");
  });
});

describe('carapace policy explain', () => {
  it('explains an allowed request and the rule that allowed it', () => {
    const r = carapace([
      'policy',
      'explain',
      SANDBOX,
      '--host',
      'api.telegram.org',
      '--port',
      '443',
      '--method',
      'POST',
      '--path',
      '/bot1/sendMessage',
    ]);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^decision\s+allow$/m);
    expect(r.stdout).toMatch(/^rule\s+allow POST \/bot\*\/\*\*$/m);
  });

  it('explains a denied connection', () => {
    const r = carapace([
      'policy',
      'explain',
      SANDBOX,
      '--host',
      'api.github.com',
      '--port',
      '443',
      '--binary',
      '/usr/bin/curl',
    ]);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^decision\s+deny$/m);
    expect(r.stdout).toContain('"github" allows /usr/bin/gh, /usr/bin/git');
  });

  it('counts ancestors only for binaries marked descendants: true, and prints JSON on request', () => {
    const r = carapace([
      'policy',
      'explain',
      SANDBOX,
      '--host',
      'github.com',
      '--port',
      '443',
      '--binary',
      '/usr/bin/ssh',
      '--ancestor',
      '/usr/bin/git',
      '--json',
    ]);
    expect(r.status).toBe(0);
    // NemoClaw's file lists git without the Carapace extension: git's children are not git.
    const d = JSON.parse(r.stdout) as { allowed: boolean; reason: string };
    expect(d.allowed).toBe(false);
    expect(d.reason).toContain('it runs under "/usr/bin/git", but the programs a binary starts count only');
  });

  it('prints JSON with -o json, as every other command; --json stays as a hidden alias', () => {
    const args = [
      'policy',
      'explain',
      SANDBOX,
      '--host',
      'github.com',
      '--port',
      '443',
      '--binary',
      '/usr/bin/git',
    ];
    const o = carapace([...args, '-o', 'json']);
    expect(o.status).toBe(0);
    expect((JSON.parse(o.stdout) as { allowed: boolean }).allowed).toBe(true);
    expect(carapace([...args, '--json']).stdout).toBe(o.stdout);
    expect(carapace([...args, '-o', 'text']).stdout).toBe(carapace(args).stdout);
    expect(carapace([...args, '-o', 'yaml'])).toMatchObject({
      status: 2,
      stderr: 'carapace: --output yaml is not one of text, json (leave -o out for text)\n',
    });
    const help = carapace(['policy', 'explain', '--help']).stdout;
    expect(help).toContain('-o, --output <format>');
    expect(help).not.toContain('--json');
  });

  it('rejects bad input with one line and exit 2', () => {
    const noPath = carapace([
      'policy',
      'explain',
      SANDBOX,
      '--host',
      'a.com',
      '--port',
      '443',
      '--method',
      'GET',
    ]);
    expect(noPath.status).toBe(2);
    expect(noPath.stderr).toBe(
      'carapace: --method and --path go together: give both to explain a request, neither for a connection\n',
    );
    const badPort = carapace(['policy', 'explain', SANDBOX, '--host', 'a.com', '--port', '70000']);
    expect(badPort.status).toBe(2);
    expect(badPort.stderr).toBe('carapace: --port must be a TCP port (1–65535), not "70000"\n');
    const noHost = carapace(['policy', 'explain', SANDBOX, '--port', '443']);
    expect(noHost.status).not.toBe(0);
    expect(noHost.stderr).toContain("required option '--host <host>' not specified");
  });
});

describe('carapace policy presets / show-preset', () => {
  it('lists the built-in presets', () => {
    const r = carapace(['policy', 'presets']);
    expect(r.status).toBe(0);
    expect(
      r.stdout
        .split('\n')
        .filter(Boolean)
        .map((l) => l.split(/\s+/)[0]),
    ).toEqual(['discord', 'docker', 'huggingface', 'jira', 'npm', 'outlook', 'pypi', 'slack', 'telegram']);
  });

  it('prints a preset', () => {
    const r = carapace(['policy', 'show-preset', 'telegram']);
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('host: api.telegram.org');
    expect(r.stdout).toBe(readFileSync(join(POLICIES, 'presets', 'telegram.yaml'), 'utf8'));
  });

  it('suggests a name for an unknown preset', () => {
    const r = carapace(['policy', 'show-preset', 'slak']);
    expect(r.status).toBe(2);
    expect(r.stderr).toBe(
      'carapace: unknown preset "slak" (did you mean "slack"? carapace policy presets lists them)\n',
    );
  });
});

describe('carapace policy diff', () => {
  it('shows changes and which sections need a new sandbox', () => {
    const r = carapace(['policy', 'diff', join(POLICIES, 'default.yaml'), join(POLICIES, 'openclaw.yaml')]);
    expect(r.status).toBe(0);
    expect(r.stdout).toContain(
      '+ network_policies.clawhub: clawhub.com:443 rest allow GET /**, POST /**; clawhub.ai:443 rest allow GET /**, POST /** — for any program',
    );
    expect(r.stdout).toContain(
      'static sections changed (the sandbox must be recreated): filesystem_policy, limits',
    );
    expect(r.stdout).toContain('hot-reloadable sections changed: network_policies, inference');
  });

  it('says when there is no difference', () => {
    const r = carapace(['policy', 'diff', SANDBOX, SANDBOX]);
    expect(r.stdout).toBe('no differences\n');
  });

  it('reports an invalid side', () => {
    const bad = tempFile('bad.yaml', 'version: 2\n');
    const r = carapace(['policy', 'diff', SANDBOX, bad]);
    expect(r.status).toBe(2);
    expect(r.stderr).toBe(`${bad}:1:10: "version" must be 1, not the number 2\n`);
  });
});

describe('carapace policy apply-ops', () => {
  it('shows the diff and writes nothing without --write', () => {
    const file = tempFile('p.yaml', readFileSync(join(POLICIES, 'default.yaml'), 'utf8'));
    const before = readFileSync(file, 'utf8');
    const r = carapace([
      'policy',
      'apply-ops',
      file,
      '--add-endpoint',
      'pypi.org:443:read-only:rest',
      '--binary',
      '/usr/bin/pip',
    ]);
    expect(r.status).toBe(0);
    expect(r.stdout).toBe(
      '+ network_policies.allow_pypi_org_443: pypi.org:443 rest access read-only — for /usr/bin/pip\n',
    );
    expect(r.stderr).toContain('dry run');
    expect(readFileSync(file, 'utf8')).toBe(before);
  });

  it('writes with --write, keeping comments, and validates the result', () => {
    const file = tempFile('p.yaml', readFileSync(SANDBOX, 'utf8'));
    const r = carapace([
      'policy',
      'apply-ops',
      file,
      '--add-preset',
      'slack',
      '--remove-endpoint',
      'sentry.io:443',
      '--add-deny-rule',
      'api.telegram.org:443:POST:/bot*/deleteWebhook',
      '--write',
    ]);
    expect(r.stderr).toBe(`wrote ${file}\n`);
    expect(r.status).toBe(0);
    const text = readFileSync(file, 'utf8');
    expect(text).toContain('# ── OpenClaw "phone home"');
    expect(text).toContain('hooks.slack.com');
    expect(text).not.toContain('sentry.io');
    const v = carapace(['policy', 'validate', file]);
    expect(v.status).toBe(0);
    const e = carapace([
      'policy',
      'explain',
      file,
      '--host',
      'api.telegram.org',
      '--port',
      '443',
      '--method',
      'POST',
      '--path',
      '/bot1/deleteWebhook',
    ]);
    expect(e.stdout).toMatch(/^decision\s+deny$/m);
  });

  it('a preset that is already there is a no-op', () => {
    const file = tempFile('p.yaml', readFileSync(SANDBOX, 'utf8'));
    const r = carapace(['policy', 'apply-ops', file, '--add-preset', 'discord', '--write']);
    expect(r.stdout).toBe('no changes\n');
    expect(readFileSync(file, 'utf8')).toBe(readFileSync(SANDBOX, 'utf8'));
  });

  it('rejects bad operations with one line per problem and exit 2', () => {
    const file = tempFile('p.yaml', readFileSync(SANDBOX, 'utf8'));
    const spec = carapace(['policy', 'apply-ops', file, '--add-endpoint', 'api.x.com:443:write']);
    expect(spec.status).toBe(2);
    expect(spec.stderr).toBe(
      '--add-endpoint: "api.x.com:443:write": access must be one of read-only, read-write, full, got "write"\n',
    );
    const none = carapace(['policy', 'apply-ops', file]);
    expect(none.status).toBe(2);
    expect(none.stderr).toContain('apply-ops needs at least one operation');
    const missing = carapace(['policy', 'apply-ops', file, '--remove-endpoint', 'nope.com:443']);
    expect(missing.status).toBe(2);
    expect(missing.stderr).toBe('--remove-endpoint: no endpoint nope.com:443 in the policy\n');
    const binaryAlone = carapace(['policy', 'apply-ops', file, '--binary', '/usr/bin/git']);
    expect(binaryAlone.status).toBe(2);
    expect(binaryAlone.stderr).toContain('--binary applies to --add-endpoint');
    expect(readFileSync(file, 'utf8')).toBe(readFileSync(SANDBOX, 'utf8'));
  });

  it('prints the resulting policy with --print', () => {
    const file = join(mkdtempSync(join(tmpdir(), 'carapace-policy-')), 'p.yaml');
    copyFileSync(join(POLICIES, 'default.yaml'), file);
    const r = carapace(['policy', 'apply-ops', file, '--add-preset', 'npm', '--print']);
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('# Carapace default policy');
    expect(r.stdout).toContain('registry.yarnpkg.com');
  });
});
