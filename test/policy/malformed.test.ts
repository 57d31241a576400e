/**
 * Malformed policies: each must give the right `file:line:col: message`, and a file with several
 * problems must report all of them in one run.
 */
import { describe, expect, it } from 'vitest';
import { parsePolicy, parsePreset } from '../../src/policy/index.js';

interface Case {
  name: string;
  yaml: string;
  line: number;
  col: number;
  message: string | RegExp;
}

const EP = (lines: string): string => `version: 1\nnetwork_policies:\n  gh:\n    endpoints:\n${lines}`;

const cases: Case[] = [
  {
    name: 'bad indentation of a key',
    yaml: 'version: 1\nnetwork_policies:\n  a:\n    name: a\n   endpoints: []\n',
    line: 5,
    col: 4,
    message: 'wrong indentation',
  },
  {
    name: 'list item indented too far (folded into the previous one)',
    yaml: 'version: 1\nfilesystem_policy:\n  read_only:\n    - /usr\n      - /lib\n',
    line: 4,
    col: 7,
    message: 'runs over several lines',
  },
  {
    name: 'key indented too little (misplaced)',
    yaml: 'version: 1\nfilesystem_policy:\nread_only: [/usr]\n',
    line: 3,
    col: 1,
    message: '"read_only" does not belong in the policy; it is a key of filesystem_policy',
  },
  {
    name: 'tab used as indentation',
    yaml: 'version: 1\nfilesystem_policy:\n\tread_only: [/usr]\n',
    line: 3,
    col: 1,
    message: 'a tab is used for indentation',
  },
  {
    name: 'unknown key with a suggestion',
    yaml: EP('      - host: api.github.com\n        port: 443\n        acess: full\n'),
    line: 7,
    col: 9,
    message: 'unknown key "acess" in endpoint (did you mean "access"?)',
  },
  {
    name: 'unknown top-level key',
    yaml: 'version: 1\nnetwork_policy: {}\n',
    line: 2,
    col: 1,
    message: 'unknown key "network_policy" in the policy (did you mean "network_policies"?)',
  },
  {
    name: 'wrong type: port as a string',
    yaml: EP('      - host: api.github.com\n        port: "443"\n'),
    line: 6,
    col: 15,
    message: '"port" must be a number, not the string "443" (write it without quotes: port: 443)',
  },
  {
    name: 'wrong value: version as a string',
    yaml: 'version: "1"\n',
    line: 1,
    col: 10,
    message: '"version" must be 1, not the string "1" (write it without quotes: version: 1)',
  },
  {
    name: 'wrong type: read_only as a string',
    yaml: 'version: 1\nfilesystem_policy:\n  read_only: /usr\n',
    line: 3,
    col: 14,
    message: '"read_only" must be a list',
  },
  {
    name: 'bad enum value with a suggestion',
    yaml: 'version: 1\nlandlock:\n  compatibility: besteffort\n',
    line: 3,
    col: 18,
    message: 'did you mean "best_effort"?',
  },
  {
    name: 'missing version',
    yaml: 'network_policies: {}\n',
    line: 1,
    col: 1,
    message: 'the policy is missing "version"',
  },
  {
    name: 'wildcard over a TLD',
    yaml: EP("      - { host: '*.com', port: 443 }\n"),
    line: 5,
    col: 17,
    message: 'wildcard directly over the top-level domain "com"',
  },
  {
    name: 'wildcard inside a label',
    yaml: EP("      - { host: 'a*b.x.com', port: 443 }\n"),
    line: 5,
    col: 17,
    message: 'not a whole first label',
  },
  {
    name: 'bare * host',
    yaml: EP("      - { host: '**', port: 443 }\n"),
    line: 5,
    col: 17,
    message: 'would allow every host',
  },
  {
    name: 'relative path',
    yaml: 'version: 1\nfilesystem_policy:\n  read_only: [/usr, usr/lib]\n',
    line: 3,
    col: 21,
    message: 'path "usr/lib" is relative',
  },
  {
    name: '.. in a path',
    yaml: 'version: 1\nfilesystem_policy:\n  read_only:\n    - /sandbox/../etc\n',
    line: 4,
    col: 7,
    message: 'contains ".."',
  },
  {
    name: '/ read-write',
    yaml: 'version: 1\nfilesystem_policy:\n  read_write: [/tmp, /]\n',
    line: 3,
    col: 22,
    message: '"/" cannot be read-write',
  },
  {
    name: 'port 0',
    yaml: EP('      - host: a.com\n        port: 0\n'),
    line: 6,
    col: 15,
    message: 'port 0 is out of range',
  },
  {
    name: 'port 70000 in a ports list',
    yaml: EP('      - host: a.com\n        ports: [443, 70000]\n'),
    line: 6,
    col: 22,
    message: 'port 70000 is out of range',
  },
  {
    name: 'both access and rules',
    yaml: EP(
      '      - host: a.com\n        port: 443\n        access: full\n        rules:\n          - allow: { method: GET, path: /** }\n',
    ),
    line: 8,
    col: 9,
    message: '"access" and "rules" cannot both be set',
  },
  {
    name: 'empty rules',
    yaml: EP('      - host: a.com\n        port: 443\n        protocol: rest\n        rules: []\n'),
    line: 8,
    col: 16,
    message: '"rules" is an empty list',
  },
  {
    name: 'empty deny_rules',
    yaml: EP('      - host: a.com\n        port: 443\n        access: read-only\n        deny_rules: []\n'),
    line: 8,
    col: 21,
    message: '"deny_rules" is an empty list',
  },
  {
    name: 'bad CIDR prefix',
    yaml: EP('      - host: a.com\n        port: 443\n        allowed_ips: [10.0.0.0/33]\n'),
    line: 7,
    col: 23,
    message: 'invalid prefix length "/33"',
  },
  {
    name: 'CIDR with host bits',
    yaml: EP('      - host: a.com\n        port: 443\n        allowed_ips:\n          - 10.0.0.1/8\n'),
    line: 8,
    col: 13,
    message: 'did you mean 10.0.0.0/8?',
  },
  {
    name: 'allowed_ips covering loopback',
    yaml: EP('      - host: a.com\n        port: 443\n        allowed_ips: [0.0.0.0/0]\n'),
    line: 7,
    col: 23,
    message: 'includes loopback',
  },
  {
    name: 'duplicate key in an endpoint',
    yaml: EP('      - host: a.com\n        host: b.com\n        port: 443\n'),
    line: 6,
    col: 9,
    message: 'duplicate key "host" in endpoint (first defined on line 5)',
  },
  {
    name: 'duplicate network policy key',
    yaml: 'version: 1\nnetwork_policies:\n  gh:\n    endpoints: [{host: a.com, port: 443}]\n  gh:\n    endpoints: [{host: b.com, port: 443}]\n',
    line: 5,
    col: 3,
    message: 'duplicate network policy "gh"',
  },
  {
    name: 'endpoint without port',
    yaml: EP('      - host: a.com\n'),
    line: 5,
    col: 9,
    message: 'endpoint has no "port"',
  },
  {
    name: 'port and ports together',
    yaml: EP('      - host: a.com\n        port: 443\n        ports: [443, 8443]\n'),
    line: 7,
    col: 9,
    message: 'both "port" and "ports"',
  },
  {
    name: 'empty binaries list',
    yaml: EP('      - { host: a.com, port: 443 }\n    binaries: []\n'),
    line: 6,
    col: 15,
    message: '"binaries" is an empty list',
  },
  {
    name: 'relative binary path',
    yaml: EP('      - { host: a.com, port: 443 }\n    binaries:\n      - { path: curl }\n'),
    line: 7,
    col: 17,
    message: 'binary "curl" must be an absolute path',
  },
  {
    name: 'protocol rest without rules or access',
    yaml: EP('      - host: a.com\n        port: 443\n        protocol: rest\n'),
    line: 7,
    col: 19,
    message: 'needs "rules" or "access"',
  },
  {
    name: 'protocol tcp with access',
    yaml: EP('      - host: a.com\n        port: 443\n        protocol: tcp\n        access: full\n'),
    line: 8,
    col: 9,
    message: '"protocol: tcp" passes bytes through uninspected',
  },
  {
    name: 'rule path without a leading slash',
    yaml: EP(
      '      - host: a.com\n        port: 443\n        rules:\n          - allow: { method: GET, path: "repos/**" }\n',
    ),
    line: 8,
    col: 41,
    message: 'must start with "/"',
  },
  {
    name: 'rule method with a "*" inside (methods are not patterns)',
    yaml: EP(
      '      - host: a.com\n        port: 443\n        rules:\n          - allow: { method: "GE*", path: "/**" }\n',
    ),
    line: 8,
    col: 30,
    message: 'method "GE*": "*" stands alone for every method; a method is not a pattern',
  },
  {
    name: 'deny rule method that is not a token',
    yaml: EP(
      '      - host: a.com\n        port: 443\n        access: full\n        deny_rules:\n          - { method: "GET /x", path: "/**" }\n',
    ),
    line: 9,
    col: 23,
    message:
      'method "GET /x" must be an HTTP method (a token such as GET or M-SEARCH), or "*" for every method',
  },
  {
    name: 'memory with an unknown unit',
    yaml: 'version: 1\nlimits:\n  memory: 2GB\n',
    line: 3,
    col: 11,
    message: 'memory "2GB" is not a size',
  },
  {
    name: 'inference default that names no route',
    yaml: 'version: 1\ninference:\n  routes:\n    cloud: { provider: openai, endpoint: "https://api.openai.com/v1", model: gpt }\n  default: local\n',
    line: 5,
    col: 12,
    message: 'route "local" is not defined',
  },
  {
    name: 'process as root',
    yaml: 'version: 1\nprocess:\n  run_as_user: root\n',
    line: 3,
    col: 16,
    message: 'is root',
  },
  {
    name: 'unclosed flow sequence: said so, at its "["',
    yaml: 'version: 1\nfilesystem_policy:\n  read_only: [/usr, /lib\n',
    line: 3,
    col: 14,
    message: 'this list is not closed: add the "]" at its end (or check the indentation)',
  },
  {
    name: 'unclosed flow sequence followed by another key',
    yaml: 'version: 1\nfilesystem_policy:\n  read_only: [/usr, "/a]b", /lib\n  read_write: [/tmp]\n',
    line: 3,
    col: 14,
    message: 'this list is not closed: add the "]"',
  },
  {
    name: 'unclosed flow map, a closed one inside it',
    yaml: 'version: 1\nfilesystem_policy: { read_only: [/usr], read_write: [/tmp]\nlandlock: {}\n',
    line: 2,
    col: 20,
    message: 'this map is not closed: add the "}" at its end (or check the indentation)',
  },
  {
    name: 'empty file',
    yaml: '',
    line: 1,
    col: 1,
    message: 'the file is empty',
  },
];

describe('malformed policies give file:line:col messages', () => {
  it('has at least twenty cases', () => {
    expect(cases.length).toBeGreaterThanOrEqual(20);
  });

  for (const c of cases) {
    it(c.name, () => {
      const r = parsePolicy(c.yaml, 'bad.yaml');
      expect(r.ok).toBe(false);
      if (r.ok) return;
      const all = r.diagnostics.map((d) => `${d.file}:${d.line}:${d.col}: ${d.message}`);
      const found = r.diagnostics.find((d) =>
        typeof c.message === 'string' ? d.message.includes(c.message) : c.message.test(d.message),
      );
      expect(found, all.join('\n')).toBeDefined();
      expect({ file: found?.file, line: found?.line, col: found?.col }).toEqual({
        file: 'bad.yaml',
        line: c.line,
        col: c.col,
      });
    });
  }
});

describe('all problems in one run', () => {
  it('reports every error of a file with several, in order', () => {
    const yaml = [
      'version: 1', // 1
      'filesystem_policy:', // 2
      '  read_only: [usr]', // 3
      '  read_write: [/]', // 4
      'network_policies:', // 5
      '  gh:', // 6
      '    endpoints:', // 7
      '      - host: "*.com"', // 8
      '        port: 0', // 9
      '        acess: full', // 10
      '      - host: b.com', // 11
      '        port: 443', // 12
      '        allowed_ips: [300.1.1.1]', // 13
      'limits:', // 14
      '  pids: "many"', // 15
      '',
    ].join('\n');
    const r = parsePolicy(yaml, 'many.yaml');
    expect(r.ok).toBe(false);
    if (r.ok) return;
    const got = r.diagnostics.map((d) => `${d.line}:${d.col}`);
    expect(got).toEqual(['3:15', '4:16', '8:15', '9:15', '10:9', '13:23', '15:9']);
    expect(r.diagnostics.every((d) => d.file === 'many.yaml')).toBe(true);
  });

  it('reports syntax errors all at once', () => {
    const r = parsePolicy('version: 1\na: [1\nb: {c\n', 'syntax.yaml');
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.diagnostics.length).toBeGreaterThanOrEqual(2);
  });

  it('accepts prose folded over several lines, but not a folded key', () => {
    const prose = parsePreset(
      'preset:\n  name: x\n  description: Discord API,\n    gateway and CDN\nnetwork_policies: {}\n',
      'p.yaml',
    );
    expect(prose.ok).toBe(true);
    const folded = parsePolicy(
      'version: 1\nprocess:\n  run_as_user: sandbox\n    run_as_group: sandbox\n',
      'p.yaml',
    );
    expect(folded.ok).toBe(false);
  });

  it('reports preset problems with positions', () => {
    const r = parsePreset('preset:\n  name: x\n  descripton: y\nnetwork_policies: {}\n', 'p.yaml');
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(r.diagnostics[0]).toMatchObject({ line: 3, col: 3 });
      expect(r.diagnostics[0]?.message).toContain('did you mean "description"?');
    }
  });
});
