/**
 * Bad input at the gateway's CLI (issue 12, "one clear line"): each mistake gets one line naming
 * what is wrong and how to fix it (a policy's problems: one `file:line:col` line each, naming the
 * caller's file), a non-zero exit, and leaves the sandboxes and their stored state as they were.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removedAfterFile } from '../helpers/cli.js';
import { cliAs, startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { holds } from '../helpers/premises.js';

describe.skipIf(!holds('root'))('bad input at the gateway CLI', () => {
  let gw: TestGateway;
  let dir: string;
  const cli = (args: string[]) => cliAs(gw.home, args);
  /** Everything a user can see of their sandboxes (the list, the policy history, the forwards). */
  const everything = () =>
    [
      cli(['sandbox', 'list', '-o', 'json']).stdout,
      cli(['policy', 'history', 'keep', '-o', 'json']).stdout,
      cli(['sandbox', 'forward', 'keep', '--list']).stdout,
    ].join('\n');

  beforeAll(async () => {
    gw = await startTestGateway();
    dir = removedAfterFile(mkdtempSync(join(tmpdir(), 'carapace-bad-input-')));
    // A policy that lets it listen on the port it forwards (the default policy lets it listen on none).
    const listening = join(dir, 'listening.yaml');
    writeFileSync(
      listening,
      'version: 1\nfilesystem_policy:\n  read_only: [/usr, /lib, /lib64, /bin, /etc]\n  read_write: [/sandbox, /tmp]\nlisten_ports: [18911, 18912]\n',
    );
    const r = cli([
      'sandbox',
      'create',
      '--name',
      'keep',
      '--policy',
      listening,
      '--forward',
      '18911',
      '--',
      'sleep',
      'infinity',
    ]);
    expect(r.status, r.stderr).toBe(0);
  });
  afterAll(() => gw?.stop());

  it('each mistake: one line, a non-zero exit, nothing changed', () => {
    // A YAML error: the caller's own file, line and column, and nothing created.
    const yaml = join(dir, 'broken.yaml');
    writeFileSync(yaml, 'version: 1\nnetwork_policies:\n  a: {name: a\n');
    const rootReadOnly = join(dir, 'root-read-only.yaml');
    writeFileSync(
      rootReadOnly,
      'version: 1\nfilesystem_policy:\n  read_only: [/]\n  read_write: [/sandbox, /tmp]\n',
    );
    const before = everything();
    const cases: [string[], RegExp][] = [
      [
        ['sandbox', 'create', '--name', 'new', '--policy', yaml, '--', 'true'],
        new RegExp(`^${yaml}:3:\\d+: `),
      ],
      [
        ['sandbox', 'create', '--name', 'new', '--policy', join(dir, 'none.yaml'), '--', 'true'],
        /^carapace: --policy .*none\.yaml: cannot read it: no such file$/,
      ],
      [
        ['sandbox', 'create', '--name', 'keep', '--', 'true'],
        /^carapace: you already have a sandbox named "keep"/,
      ],
      [
        ['sandbox', 'create', '--name', 'new', '--restart', 'sometimes', '--', 'true'],
        /^carapace: --restart sometimes: /,
      ],
      [
        ['sandbox', 'create', '--name', 'new', '--forward', '70000', '--', 'true'],
        /^carapace: --forward "70000": expected HOSTPORT or HOSTPORT:SANDBOXPORT, each 1-65535$/,
      ],
      // A name the gateway cannot use: what a name may be, not the schema's pattern.
      [
        ['sandbox', 'create', '--name', 'New One', '--', 'true'],
        /^carapace: --name "New One": use 1-63 lower-case letters, digits, '\.', '_' or '-', starting with a letter or digit$/,
      ],
      [
        ['sandbox', 'get', 'Keep'],
        // The name the user typed, not the API's place for it (path.name).
        /^carapace: "Keep" is not a sandbox name: use 1-63 lower-case letters/,
      ],
      // A host path found wrong only when the sandbox starts: refused, and nothing kept (a sandbox
      // left `failed` under that name made the corrected create fail as "already have").
      [
        ['sandbox', 'create', '--name', 'new', '--mount', `${join(dir, 'none')}:/data`, '--', 'true'],
        new RegExp(`^carapace: --mount ${join(dir, 'none')}:/data: ${join(dir, 'none')} does not exist$`),
      ],
      [
        ['sandbox', 'create', '--name', 'new', '--workspace', join(dir, 'listening.yaml'), '--', 'true'],
        /^carapace: workspace .*listening\.yaml is not a directory: give a directory \(or a path to create\)$/,
      ],
      // A start bwrap itself refuses (/ read-only: no /sandbox to make): bwrap's own line, and
      // nothing kept (it was `new failed`, exit 0, the reason only "did not start (exit 1)").
      [
        ['sandbox', 'create', '--name', 'new', '--policy', rootReadOnly, '--', 'true'],
        /^carapace: the sandbox did not start: bwrap: Can't mkdir \/sandbox: Read-only file system$/,
      ],
      [
        ['provider', 'create', 'p2', '--type', 'openai-compatible', '--credential-env', 'PATH'],
        /^carapace: an openai-compatible provider needs --base-url \(e\.g\. http:\/\/127\.0\.0\.1:8000\/v1\)$/,
      ],
      // A field the gateway's schema refuses reads as the flag typed, not the API's body.labels.
      [
        ['sandbox', 'create', '--name', 'new', '--label', 'bad key=v', '--', 'true'],
        /^carapace: --label "bad key": Invalid key in record$/,
      ],
      [
        ['sandbox', 'update', 'keep', '--label', `k=${'v'.repeat(300)}`],
        /^carapace: --label "k": Too big: expected string to have <=256 characters$/,
      ],
      [['sandbox', 'get', 'nosuch'], /^carapace: no sandbox named "nosuch"$/],
      [['sandbox', 'stop', 'nosuch'], /^carapace: no sandbox named "nosuch"$/],
      [['sandbox', 'exec', 'nosuch', '--', 'true'], /^carapace: no sandbox named "nosuch"$/],
      [['sandbox', 'update', 'keep', '--restart', 'sometimes'], /^carapace: --restart sometimes: /],
      // Nothing to change: said, not an exit 0 that changed nothing.
      [
        ['sandbox', 'update', 'keep'],
        /^carapace: nothing to change: give --restart never\|on-failure\|always, or --label KEY=VALUE \(repeatable; the labels given replace the old ones\)$/,
      ],

      [
        ['sandbox', 'forward', 'keep', '99999'],
        /^carapace: "99999": expected HOSTPORT or HOSTPORT:SANDBOXPORT, each 1-65535$/,
      ],
      [['sandbox', 'forward', 'keep', '0:80'], /^carapace: "0:80": expected HOSTPORT/],
      [['sandbox', 'forward', 'keep', '18911'], /^carapace: host port 18911 is already forwarded$/],
      // A new sandbox whose forward's host port is taken is not created at all (it was, left
      // `creating` with no start, to be started by the next gateway).
      [
        [
          'sandbox',
          'create',
          '--name',
          'new',
          '--policy',
          join(dir, 'listening.yaml'),
          '--forward',
          '18911:18912',
          '--',
          'true',
        ],
        /^carapace: host port 18911 is already forwarded$/,
      ],
      [
        [
          'sandbox',
          'create',
          '--name',
          'new',
          '--policy',
          join(dir, 'listening.yaml'),
          '--forward',
          '18915:18912',
          '--forward',
          '18915:18911',
          '--',
          'true',
        ],
        /^carapace: host port 18915 is already forwarded$/,
      ],
      // A port the agent may not listen on could never answer: said, with where to allow it.
      [
        ['sandbox', 'forward', 'keep', '18913:8080'],
        /^carapace: port 8080 is not one keep may listen on \(its policy's listen_ports: 18911, 18912\): add it to listen_ports \(carapace policy set keep FILE --restart\)$/,
      ],
      // Creating, the port is added where the sandbox's policy comes from: the --policy file, or one
      // to write (the default lists none), not a sandbox that does not exist yet.
      [
        ['sandbox', 'create', '--name', 'new', '--forward', '18914', '--', 'true'],
        /^carapace: port 18914 is not one new may listen on \(the default policy's listen_ports: none\): give --policy FILE with listen_ports: \[18914\] \(e\.g\. a copy of \/.*\/policies\/default\.yaml with it added\)$/,
      ],
      [
        [
          'sandbox',
          'create',
          '--name',
          'new',
          '--policy',
          join(dir, 'listening.yaml'),
          '--forward',
          '18914:8080',
          '--',
          'true',
        ],
        new RegExp(
          `^carapace: port 8080 is not one new may listen on \\(listen_ports in ${join(dir, 'listening.yaml')}: 18911, 18912\\): add 8080 to listen_ports in ${join(dir, 'listening.yaml')}$`,
        ),
      ],
      [
        ['sandbox', 'forward', 'keep', '--remove', 'abc'],
        /^carapace: --remove abc: expected the host port of a forward$/,
      ],
      [
        ['sandbox', 'logs', 'keep', '--tail', 'abc'],
        /^carapace: --tail abc: expected a whole number of lines$/,
      ],
      [
        ['sandbox', 'logs', 'keep', '--audit', '--type', 'bogus'],
        /^carapace: --type bogus: expected denied, allowed, lifecycle or all$/,
      ],
      [
        ['sandbox', 'upload', 'keep', join(dir, 'none')],
        /^carapace: upload: .*none: no such file or directory$/,
      ],
      [['policy', 'set', 'keep', yaml], new RegExp(`^${yaml}:3:\\d+: `)],
      [
        ['policy', 'set', 'keep', join(dir, 'none.yaml')],
        /^carapace: policy .*none\.yaml: cannot read it: no such file$/,
      ],
      [['policy', 'rollback', 'keep', '--to', '7'], /^carapace: sandbox keep has no policy revision 7/],
    ];
    for (const [args, line] of cases) {
      const r = cli(args);
      const what = `carapace ${args.join(' ')} → ${r.status}: ${r.stdout}${r.stderr}`;
      expect(r.status, what).not.toBe(0);
      expect(r.stdout, what).toBe('');
      // One problem, one line (the broken YAML has one problem).
      expect(r.stderr.split('\n').filter(Boolean), what).toHaveLength(1);
      expect(r.stderr.trimEnd(), what).toMatch(line);
    }
    expect(everything()).toBe(before);
  });

  it('sandbox update says what the sandbox has now: its restart policy and its labels', () => {
    const r = cli(['sandbox', 'update', 'keep', '--label', 'team=infra', '--label', 'tier=dev']);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('keep restart=never labels=team=infra,tier=dev\n');
    expect(cli(['sandbox', 'update', 'keep', '--restart', 'on-failure']).stdout).toBe(
      'keep restart=on-failure labels=team=infra,tier=dev\n',
    );
  });
});
