/** The built-in policies and presets, and a policy that uses every field, validate. */
import { readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  compilePolicy,
  listPresets,
  loadPolicyFile,
  loadPresetFile,
  parsePolicyOrPreset,
  resolveLimits,
} from '../../src/policy/index.js';
import { COMPAT, POLICIES, REPO, yamlFiles } from './helpers.js';

describe('built-in policies', () => {
  it('default.yaml is restrictive: system dirs read-only, workspace writable, no network', () => {
    const p = loadPolicyFile(join(POLICIES, 'default.yaml'));
    expect(p.filesystem_policy?.read_only).toEqual(['/usr', '/lib', '/lib64', '/bin', '/sbin', '/etc']);
    expect(p.filesystem_policy?.read_write).toEqual(['/sandbox', '/tmp']);
    expect(p.landlock?.compatibility).toBe('best_effort');
    const g = compilePolicy(p);
    expect(g.endpointCount).toBe(0);
    expect(g.decideConnect({ host: 'registry.npmjs.org', port: 443 }).allowed).toBe(false);
  });

  it('openclaw.yaml allows what an OpenClaw agent needs', () => {
    const p = loadPolicyFile(join(POLICIES, 'openclaw.yaml'));
    const g = compilePolicy(p);
    const node = '/usr/local/bin/node';
    expect(
      g.decideRequest({ host: 'clawhub.com', port: 443, binary: node, method: 'POST', path: '/api/x' })
        .allowed,
    ).toBe(true);
    expect(
      g.decideRequest({ host: 'docs.openclaw.ai', port: 443, binary: node, method: 'GET', path: '/' })
        .allowed,
    ).toBe(true);
    expect(
      g.decideRequest({ host: 'docs.openclaw.ai', port: 443, binary: node, method: 'POST', path: '/' })
        .allowed,
    ).toBe(false);
    expect(g.decideConnect({ host: 'registry.npmjs.org', port: 443, binary: node }).allowed).toBe(true);
    expect(g.decideConnect({ host: 'github.com', port: 443, binary: '/usr/bin/git' }).allowed).toBe(true);
    expect(g.decideConnect({ host: 'github.com', port: 443, binary: node }).allowed).toBe(false);
    expect(p.inference?.default).toBe('nvidia');
    expect(resolveLimits(p)).toEqual({ memoryBytes: 4 * 2 ** 30, pids: 4096, openFiles: 8192 });
    // ClawHub at both its names: this OpenClaw's client goes to clawhub.ai.
    for (const host of ['clawhub.com', 'clawhub.ai'])
      expect(
        g.decideRequest({ host, port: 443, binary: node, method: 'GET', path: '/api/v1/skills' }).allowed,
      ).toBe(true);
  });

  it("openclaw.yaml is the OpenClaw blueprint's policy with inference routes", () => {
    const { inference, ...shipped } = loadPolicyFile(join(POLICIES, 'openclaw.yaml'));
    expect(inference).toBeDefined();
    expect(shipped).toEqual(loadPolicyFile(join(REPO, 'blueprints', 'openclaw', 'policy.yaml')));
  });

  it('lists the nine presets', () => {
    expect(listPresets().map((p) => p.name)).toEqual([
      'discord',
      'docker',
      'huggingface',
      'jira',
      'npm',
      'outlook',
      'pypi',
      'slack',
      'telegram',
    ]);
  });

  for (const file of yamlFiles(join(POLICIES, 'presets'))) {
    it(`preset ${basename(file)} has the same hosts, methods and paths as NemoClaw's`, () => {
      const ours = loadPresetFile(file);
      const theirs = loadPresetFile(join(COMPAT, 'nemoclaw', 'presets', basename(file)));
      expect(ours.preset.name).toBe(theirs.preset.name);
      expect(ours.network_policies).toEqual(theirs.network_policies);
    });
  }

  it('a policy using every field validates and compiles', () => {
    const file = join(REPO, 'test', 'policy', 'fixtures', 'every-field.yaml');
    const r = parsePolicyOrPreset(readFileSync(file, 'utf8'), file);
    expect(r.ok ? r.kind : r.diagnostics).toBe('policy');
    if (!r.ok || r.kind !== 'policy') return;
    const keys = new Set(Object.keys(r.policy));
    for (const k of [
      'version',
      'filesystem_policy',
      'landlock',
      'process',
      'network_policies',
      'limits',
      'inference',
      'listen_ports',
    ]) {
      expect(keys.has(k), k).toBe(true);
    }
    const g = compilePolicy(r.policy);
    const gh = g.decideConnect({ host: 'api.github.com', port: 443, binary: '/usr/bin/gh' });
    expect(gh.credentials).toEqual(['GITHUB_TOKEN']);
    const redis = g.decideConnect({ host: 'redis.internal.example.com', port: 6379 });
    expect(redis.endpoint).toMatchObject({ protocol: 'tcp', tls: 'skip', inspect: false });
    expect(redis.allowedIps).toEqual(['10.0.0.0/8', 'fd00::/8', '192.168.1.10']);
    const upload = g.decideRequest({
      host: 'uploads.github.com',
      port: 8443,
      binary: '/usr/lib/git-core/git-remote-https',
      method: 'POST',
      path: '/repos/a/b/releases/1/assets',
      query: 'name=x.tar.gz&label=linux-amd64',
    });
    expect(upload).toMatchObject({ allowed: true, verdict: 'allow', enforcement: 'audit' });
    expect(resolveLimits(r.policy)).toEqual({
      memoryBytes: 512 * 2 ** 20,
      pids: 256,
      cpuMillis: 500,
      openFiles: 1024,
    });
  });
});
