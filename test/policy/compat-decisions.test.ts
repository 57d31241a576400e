/** The decisions the compat fixtures' comments describe are the decisions Carapace makes. */
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { compilePolicy, loadPolicyFile, type PolicyGeneration } from '../../src/policy/index.js';
import { COMPAT } from './helpers.js';

const load = (...p: string[]): PolicyGeneration => compilePolicy(loadPolicyFile(join(COMPAT, ...p)));
const OPENCLAW = '/usr/local/bin/openclaw';

describe('NemoClaw openclaw-sandbox.yaml', () => {
  const g = load('nemoclaw', 'openclaw-sandbox.yaml');
  const req = (host: string, method: string, path: string, binary?: string) =>
    g.decideRequest({ host, port: 443, method, path, binary });

  it('ClawHub and openclaw.ai: GET and POST, for openclaw only', () => {
    expect(req('clawhub.com', 'POST', '/api/login', OPENCLAW).allowed).toBe(true);
    expect(req('clawhub.com', 'DELETE', '/api/x', OPENCLAW).allowed).toBe(false);
    expect(req('openclaw.ai', 'GET', '/', OPENCLAW).allowed).toBe(true);
    expect(req('clawhub.com', 'GET', '/', '/usr/bin/curl').allowed).toBe(false);
  });

  it('docs are read-only (GET)', () => {
    expect(req('docs.openclaw.ai', 'GET', '/guide', OPENCLAW).allowed).toBe(true);
    expect(req('docs.openclaw.ai', 'POST', '/guide', OPENCLAW).allowed).toBe(false);
  });

  it('Telegram and Discord are open by default (any program), within their rules', () => {
    expect(req('api.telegram.org', 'POST', '/bot123:abc/sendMessage', '/usr/bin/python3').allowed).toBe(true);
    expect(req('api.telegram.org', 'GET', '/file/bot1/x').allowed).toBe(false);
    expect(req('discord.com', 'POST', '/api/v10/channels/1/messages', '/usr/bin/node').allowed).toBe(true);
    expect(req('cdn.discordapp.com', 'POST', '/x').allowed).toBe(false);
  });

  it('GitHub: full access for gh and git only', () => {
    expect(g.decideConnect({ host: 'github.com', port: 443, binary: '/usr/bin/git' }).allowed).toBe(true);
    expect(req('api.github.com', 'DELETE', '/repos/a/b', '/usr/bin/gh').allowed).toBe(true);
    expect(g.decideConnect({ host: 'github.com', port: 443, binary: OPENCLAW }).allowed).toBe(false);
  });

  it('npm registry for openclaw and npm', () => {
    expect(
      g.decideConnect({ host: 'registry.npmjs.org', port: 443, binary: '/usr/local/bin/npm' }).allowed,
    ).toBe(true);
    expect(g.decideConnect({ host: 'registry.npmjs.org', port: 443, binary: '/usr/bin/pip' }).allowed).toBe(
      false,
    );
  });

  it('deny by default', () => {
    expect(g.decideConnect({ host: 'example.com', port: 443, binary: OPENCLAW }).allowed).toBe(false);
  });
});

describe('OpenShell examples', () => {
  it('quickstart: curl reads the GitHub API; POST, PUT, PATCH and DELETE are blocked', () => {
    const g = load('openshell', 'quickstart.yaml');
    const r = (method: string) =>
      g.decideRequest({
        host: 'api.github.com',
        port: 443,
        binary: '/usr/bin/curl',
        method,
        path: '/repos/a/b',
      }).allowed;
    expect(r('GET')).toBe(true);
    for (const m of ['POST', 'PUT', 'PATCH', 'DELETE']) expect(r(m)).toBe(false);
  });

  it('prover test data: the REST API is L7 read-only, github.com is L4 only', () => {
    const g = load('openshell', 'prover-testdata.yaml');
    expect(
      g.decideRequest({
        host: 'api.github.com',
        port: 443,
        binary: '/usr/bin/gh',
        method: 'POST',
        path: '/x',
      }).allowed,
    ).toBe(false);
    const clone = g.decideConnect({ host: 'github.com', port: 443, binary: '/usr/bin/git' });
    expect(clone).toMatchObject({ allowed: true, inspect: false });
    const uvPython = '/sandbox/.uv/python/cpython-3.12.3-linux-x86_64-gnu/bin/python3.12';
    expect(g.decideConnect({ host: 'github.com', port: 443, binary: uvPython }).allowed).toBe(true);
  });

  it('policy advisor: only the Anthropic API is allowed', () => {
    const g = load('openshell', 'policy-advisor.yaml');
    expect(g.decideConnect({ host: 'api.anthropic.com', port: 443, binary: '/usr/bin/node' }).allowed).toBe(
      true,
    );
    expect(g.decideConnect({ host: 'api.openai.com', port: 443, binary: '/usr/bin/node' }).allowed).toBe(
      false,
    );
  });

  it('gator: no network policies, no network', () => {
    expect(load('openshell', 'gator.yaml').decideConnect({ host: 'pypi.org', port: 443 }).allowed).toBe(
      false,
    );
  });

  it('governance: my-api for curl, with its display name', () => {
    const d = load('openshell', 'governance.yaml').decideConnect({
      host: 'api-1.example.com',
      port: 443,
      binary: '/usr/bin/curl',
    });
    expect(d).toMatchObject({ allowed: true, policy: 'my_api', name: 'my-api' });
  });

  it('local inference: PyPI for python3.13 only; the NVIDIA API is inspected', () => {
    const g = load('openshell', 'local-inference.yaml');
    expect(
      g.decideConnect({ host: 'files.pythonhosted.org', port: 443, binary: '/usr/bin/python3.13' }).allowed,
    ).toBe(true);
    expect(g.decideConnect({ host: 'pypi.org', port: 443, binary: '/usr/bin/curl' }).allowed).toBe(false);
    expect(
      g.decideConnect({ host: 'integrate.api.nvidia.com', port: 443, binary: '/usr/bin/python3.13' }).inspect,
    ).toBe(true);
  });

  it('transparent TCP: redis over native TCP, private addresses allowed, any program', () => {
    const d = load('openshell', 'transparent-tcp-redis.yaml').decideConnect({
      host: 'redis.openshell.demo',
      port: 6379,
      binary: '/usr/bin/redis-cli',
    });
    expect(d).toMatchObject({
      allowed: true,
      inspect: false,
      allowedIps: ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16'],
    });
  });

  it('supervisor test data: git over HTTPS only for refs and upload-pack; copilot by glob', () => {
    const g = load('openshell', 'supervisor-testdata.yaml');
    const git = (method: string, path: string, query?: string) =>
      g.decideRequest({ host: 'github.com', port: 443, binary: '/usr/bin/git', method, path, query }).allowed;
    expect(git('GET', '/org/repo.git/info/refs', 'service=git-upload-pack')).toBe(true);
    expect(git('POST', '/org/repo.git/git-upload-pack')).toBe(true);
    expect(git('POST', '/org/repo.git/git-receive-pack')).toBe(false);
    const copilot = '/usr/lib/node_modules/@github/copilot/node_modules/@github/copilot-linux-x64/copilot';
    expect(g.decideConnect({ host: 'api.githubcopilot.com', port: 443, binary: copilot }).allowed).toBe(true);
    expect(
      g.decideConnect({ host: 'api.githubcopilot.com', port: 443, binary: '/home/dev/.local/bin/copilot' })
        .allowed,
    ).toBe(true);
    expect(g.decideConnect({ host: 'gitlab.com', port: 443, binary: '/usr/bin/git' }).allowed).toBe(false);
  });
});
