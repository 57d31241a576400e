/** Preset merges and incremental operations: new policy, readable diff, comments kept. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  applyPolicyOperations,
  changedSections,
  loadBuiltinPreset,
  mergePreset,
  parseEndpointSpec,
  parseRuleSpec,
  parseHostPortSpec,
  removePreset,
  type PolicyOperation,
} from '../../src/policy/index.js';
import { COMPAT, policyOf } from './helpers.js';

const BASE = `# my policy
version: 1
network_policies:
  # GitHub for git only
  github:
    name: github
    endpoints:
      - { host: api.github.com, port: 443, protocol: rest, access: read-only } # the API
      - { host: github.com, port: 443 }
    binaries:
      - { path: /usr/bin/git }
  chat:
    endpoints:
      - host: chat.example.com
        port: 443
        protocol: rest
        rules:
          - allow: { method: GET, path: "/**" }
`;

const apply = (ops: PolicyOperation[], text = BASE) => applyPolicyOperations(text, 'p.yaml', ops);

describe('preset merge semantics', () => {
  const slack = loadBuiltinPreset('slack');

  it('adds the preset keys that are absent', () => {
    const merged = mergePreset(policyOf(BASE), slack);
    expect(Object.keys(merged.network_policies ?? {})).toEqual(['github', 'chat', 'slack']);
  });

  it('is a no-op when the key exists with identical content', () => {
    const once = mergePreset(policyOf(BASE), slack);
    expect(mergePreset(once, slack)).toEqual(once);
  });

  it('is an error when the key exists with different content', () => {
    const clash = policyOf(
      'version: 1\nnetwork_policies:\n  slack:\n    endpoints: [{ host: slack.com, port: 443 }]\n',
    );
    expect(() => mergePreset(clash, slack)).toThrow(
      /network policy "slack" already exists with different content/,
    );
  });

  it('replaces on request', () => {
    const clash = policyOf(
      'version: 1\nnetwork_policies:\n  slack:\n    endpoints: [{ host: slack.com, port: 443 }]\n',
    );
    const merged = mergePreset(clash, slack, { onConflict: 'replace' });
    expect(merged.network_policies?.slack).toEqual(slack.network_policies.slack);
  });

  it('a Carapace preset merges as a no-op into the NemoClaw policy that already has it', () => {
    const nemo = policyOf(readFileSync(join(COMPAT, 'nemoclaw', 'openclaw-sandbox.yaml'), 'utf8'));
    expect(mergePreset(nemo, loadBuiltinPreset('discord'))).toEqual(nemo);
  });

  it('removal takes out unchanged keys and refuses edited ones unless forced', () => {
    const merged = mergePreset(policyOf(BASE), slack);
    expect(Object.keys(removePreset(merged, slack).network_policies ?? {})).toEqual(['github', 'chat']);
    const edited = structuredClone(merged);
    edited.network_policies?.slack?.endpoints.pop();
    expect(() => removePreset(edited, slack)).toThrow(/differs from preset "slack"/);
    expect(Object.keys(removePreset(edited, slack, true).network_policies ?? {})).toEqual(['github', 'chat']);
  });

  it('the input policy is never changed', () => {
    const p = policyOf(BASE);
    const copy = structuredClone(p);
    mergePreset(p, slack);
    expect(p).toEqual(copy);
  });
});

describe('operation specs', () => {
  it('parses host:port[:access[:protocol[:enforcement]]]', () => {
    expect(parseEndpointSpec('api.x.com:443')).toEqual({ host: 'api.x.com', port: 443 });
    expect(parseEndpointSpec('api.x.com:443:read-only:rest:audit')).toEqual({
      host: 'api.x.com',
      port: 443,
      access: 'read-only',
      protocol: 'rest',
      enforcement: 'audit',
    });
    expect(parseEndpointSpec('api.x.com:443::tcp')).toEqual({
      host: 'api.x.com',
      port: 443,
      protocol: 'tcp',
    });
  });

  it.each([
    ['api.x.com', /expects host:port/],
    ['api.x.com:0', /port 0 is out of range/],
    ['api.x.com:https', /port must be a number/],
    ['api.x.com:443:write', /access must be one of read-only, read-write, full/],
    ['*.com:443', /top-level domain/],
    ['api.x.com:443:full:ftp', /protocol must be one of/],
  ])('rejects %s', (spec, message) => {
    expect(() => parseEndpointSpec(spec)).toThrow(message);
  });

  it('parses rules and host:port', () => {
    expect(parseRuleSpec('api.x.com:443:post:/a/b:c')).toEqual({
      host: 'api.x.com',
      port: 443,
      method: 'POST',
      path: '/a/b:c',
    });
    expect(parseHostPortSpec('a.com:80')).toEqual({ host: 'a.com', port: 80 });
    expect(() => parseRuleSpec('api.x.com:443:GET')).toThrow(/host:port:METHOD:path/);
    // Any RFC 9110 token is a method; "*" stands alone.
    expect(parseRuleSpec('upnp.test:80:m-search:/**').method).toBe('M-SEARCH');
    expect(parseRuleSpec('upnp.test:80:*:/**').method).toBe('*');
    expect(() => parseRuleSpec('upnp.test:80:GE*:/**')).toThrow(/"\*" stands alone for every method/);
    expect(() => parseRuleSpec('upnp.test:80:GET /:/**')).toThrow(/must be an HTTP method \(a token/);
  });
});

describe('incremental operations', () => {
  it('add endpoint with binaries: new entry, diff, comments kept', () => {
    const r = apply([
      {
        op: 'add-endpoint',
        endpoint: parseEndpointSpec('pypi.org:443:read-only:rest'),
        binaries: ['/usr/bin/pip'],
      },
    ]);
    expect(r.policy.network_policies?.allow_pypi_org_443).toEqual({
      name: 'allow_pypi_org_443',
      endpoints: [{ host: 'pypi.org', port: 443, access: 'read-only', protocol: 'rest' }],
      binaries: [{ path: '/usr/bin/pip' }],
    });
    expect(r.diff).toEqual([
      '+ network_policies.allow_pypi_org_443: pypi.org:443 rest access read-only — for /usr/bin/pip',
    ]);
    expect(r.text).toContain('# my policy');
    expect(r.text).toContain('# GitHub for git only');
    expect(r.text).toContain('# the API');
    expect(r.sections).toEqual({ static: [], dynamic: ['network_policies'], hotReloadable: true });
  });

  it('add endpoint to an existing entry adds the missing binaries', () => {
    const r = apply([
      {
        op: 'add-endpoint',
        endpoint: parseEndpointSpec('uploads.github.com:443'),
        policyKey: 'github',
        binaries: ['/usr/bin/gh'],
      },
    ]);
    expect(r.diff).toEqual([
      '+ network_policies.github.endpoints[uploads.github.com:443]: uploads.github.com:443',
      '+ network_policies.github.binaries[/usr/bin/gh]: { path: /usr/bin/gh }',
    ]);
  });

  it('refuses an endpoint that is already there', () => {
    expect(() =>
      apply([{ op: 'add-endpoint', endpoint: parseEndpointSpec('github.com:443'), policyKey: 'github' }]),
    ).toThrow(/github.com:443 is already in network policy "github"/);
  });

  it('remove endpoint; an entry left without endpoints goes', () => {
    const r = apply([{ op: 'remove-endpoint', endpoint: parseHostPortSpec('chat.example.com:443') }]);
    expect(r.policy.network_policies?.chat).toBeUndefined();
    expect(r.diff[0]).toMatch(/^- network_policies\.chat: /);
    const r2 = apply([{ op: 'remove-endpoint', endpoint: parseHostPortSpec('github.com:443') }]);
    expect(r2.diff).toEqual(['- network_policies.github.endpoints[github.com:443]: github.com:443']);
    expect(() => apply([{ op: 'remove-endpoint', endpoint: parseHostPortSpec('nope.com:443') }])).toThrow(
      /no endpoint nope.com:443/,
    );
  });

  it('add and remove an allow rule', () => {
    const rule = parseRuleSpec('chat.example.com:443:POST:/messages');
    const r = apply([{ op: 'add-rule', kind: 'allow', rule }]);
    expect(r.diff).toEqual([
      '+ network_policies.chat.endpoints[chat.example.com:443].rules[POST /messages]: { allow: { method: POST, path: /messages } }',
    ]);
    const back = applyPolicyOperations(r.text, 'p.yaml', [{ op: 'remove-rule', kind: 'allow', rule }]);
    expect(back.policy).toEqual(policyOf(BASE));
  });

  it('adding an allow rule to an access preset spells the preset out as rules', () => {
    const r = apply([
      { op: 'add-rule', kind: 'allow', rule: parseRuleSpec('api.github.com:443:POST:/graphql') },
    ]);
    const ep = r.policy.network_policies?.github?.endpoints[0];
    expect(ep?.access).toBeUndefined();
    expect(ep?.rules?.map((x) => `${x.allow.method} ${x.allow.path}`)).toEqual([
      'GET /**',
      'HEAD /**',
      'OPTIONS /**',
      'POST /graphql',
    ]);
  });

  it('add and remove a deny rule', () => {
    const rule = parseRuleSpec('api.github.com:443:GET:/admin/**');
    const r = apply([{ op: 'add-rule', kind: 'deny', rule }]);
    expect(r.policy.network_policies?.github?.endpoints[0]?.deny_rules).toEqual([
      { method: 'GET', path: '/admin/**' },
    ]);
    const back = applyPolicyOperations(r.text, 'p.yaml', [{ op: 'remove-rule', kind: 'deny', rule }]);
    expect(back.policy).toEqual(policyOf(BASE));
  });

  it('refuses rules on an endpoint that is not inspected, and removing the last allow rule', () => {
    expect(() =>
      apply([{ op: 'add-rule', kind: 'deny', rule: parseRuleSpec('github.com:443:GET:/x') }]),
    ).toThrow(/not inspected/);
    expect(() =>
      apply([{ op: 'remove-rule', kind: 'allow', rule: parseRuleSpec('chat.example.com:443:GET:/**') }]),
    ).toThrow(/last allow rule/);
  });

  it('add and remove a preset', () => {
    const telegram = loadBuiltinPreset('telegram');
    const r = apply([{ op: 'add-preset', preset: telegram }]);
    expect(r.policy.network_policies?.telegram_bot).toEqual(telegram.network_policies.telegram_bot);
    expect(r.text).toContain('# the API');
    const again = applyPolicyOperations(r.text, 'p.yaml', [{ op: 'add-preset', preset: telegram }]);
    expect(again.changes).toEqual([]);
    const removed = applyPolicyOperations(r.text, 'p.yaml', [{ op: 'remove-preset', preset: telegram }]);
    expect(removed.policy).toEqual(policyOf(BASE));
  });

  it('adds network_policies when the file has none', () => {
    const r = apply([{ op: 'add-preset', preset: loadBuiltinPreset('npm') }], 'version: 1\n');
    expect(Object.keys(r.policy.network_policies ?? {})).toEqual(['npm_yarn']);
  });

  it('never leaves an invalid policy: the result is validated', () => {
    expect(() => apply([{ op: 'add-endpoint', endpoint: parseEndpointSpec('x.com:443::rest') }])).toThrow(
      /p\.yaml \(after the changes\):\d+:\d+: "protocol: rest" needs "rules" or "access"/,
    );
  });

  it('several operations apply in order', () => {
    const r = apply([
      { op: 'add-endpoint', endpoint: parseEndpointSpec('api.x.com:443:read-write:rest') },
      { op: 'add-rule', kind: 'deny', rule: parseRuleSpec('api.x.com:443:POST:/admin/**') },
      { op: 'remove-endpoint', endpoint: parseHostPortSpec('github.com:443') },
    ]);
    expect(r.diff).toHaveLength(2);
    expect(r.policy.network_policies?.allow_api_x_com_443?.endpoints[0]?.deny_rules).toHaveLength(1);
  });
});

describe('changed sections', () => {
  it('separates static from dynamic sections', () => {
    const a = policyOf('version: 1\nlandlock: { compatibility: best_effort }\nnetwork_policies: {}\n');
    const b = policyOf(
      'version: 1\nlandlock: { compatibility: hard_requirement }\nlimits: { pids: 10 }\ninference: { routes: { r: { provider: p, model: m } } }\n',
    );
    expect(changedSections(a, b)).toEqual({
      static: ['landlock', 'limits'],
      dynamic: ['inference'],
      hotReloadable: false,
    });
    expect(changedSections(a, a)).toEqual({ static: [], dynamic: [], hotReloadable: true });
    const c = policyOf('version: 1\nlandlock: { compatibility: best_effort }\n');
    expect(changedSections(a, c).dynamic).toEqual([]);
  });
});
