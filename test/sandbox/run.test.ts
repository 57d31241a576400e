/** Issue 3 acceptance: what works inside `carapace run`, limits, identities, and bad input. */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { carapace, freshHome } from '../helpers/cli.js';
import { hostUidRecords, runInSandbox, sharedTempDir } from '../helpers/sandbox.js';

function policyFile(yaml: string): string {
  const path = join(sharedTempDir(), 'policy.yaml');
  writeFileSync(path, yaml);
  return path;
}

const LIMITED = (limits: string) => `version: 1
filesystem_policy:
  read_only: [/usr, /lib, /lib64, /bin, /etc]
  read_write: [/sandbox, /tmp]
landlock: { compatibility: best_effort }
limits: { ${limits} }
`;

/** Leaves no trace: no runtime files, locks, identities, temporary workspaces or cgroups. */
function expectNothingLeft(home: string): void {
  const run = join(home, 'run', 'sandboxes');
  if (existsSync(run)) expect(readdirSync(run)).toEqual([]);
  const state = join(home, 'state', 'sandboxes');
  if (existsSync(state)) expect(readdirSync(state)).toEqual([]);
  // A uid whose workspace the user kept stays recorded (released, bound to it), never a name's.
  expect(hostUidRecords(join(home, 'state')).filter((r) => !r.name.startsWith('released.'))).toEqual([]);
}

describe('what works inside', () => {
  it.each([
    ['sh', ['sh', '-c', 'echo hello from $(hostname)']],
    ['node', ['node', '-e', 'console.log("hello from node", process.version)']],
    ['python3', ['python3', '-c', 'print("hello from python")']],
    [
      'git',
      [
        'sh',
        '-c',
        'cd /tmp && git init -q repo && cd repo && git -c user.email=a@b -c user.name=a commit -q --allow-empty -m x && git log --oneline | wc -l',
      ],
    ],
  ])('%s runs', (_name, cmd) => {
    const home = freshHome();
    const r = runInSandbox(cmd, ['--name', 'works'], home);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/hello|^1$/m);
  });

  it('keeps /sandbox between runs with the same workspace, owned by the sandbox uid; /tmp starts empty', () => {
    const home = freshHome();
    const ws = sharedTempDir('carapace-ws-');
    const first = runInSandbox(
      ['sh', '-c', 'echo kept > /sandbox/note && echo gone > /tmp/scratch && ls -A /tmp'],
      ['--workspace', ws],
      home,
    );
    expect(first.status).toBe(0);
    expect(first.stdout.trim()).toBe('scratch');
    const second = runInSandbox(
      ['sh', '-c', 'cat /sandbox/note; ls -A /tmp | wc -l'],
      ['--workspace', ws],
      home,
    );
    expect(second.stdout.trim().split('\n')).toEqual(['kept', '0']);
    const owner = statSync(join(ws, 'note')).uid;
    expect(owner).toBeGreaterThanOrEqual(3_000_000);
    expect(statSync(ws).mode & 0o777).toBe(0o700);
    expectNothingLeft(home);
    // Its uid is not free while the kept workspace is its own; the second run took it over.
    expect(hostUidRecords(join(home, 'state'))).toEqual([
      expect.objectContaining({ uid: owner, paths: expect.arrayContaining([ws]) as unknown }),
    ]);
  });

  it('passes the exit status through, and 128+signal when the command is killed', () => {
    expect(runInSandbox(['sh', '-c', 'exit 42']).status).toBe(42);
    expect(runInSandbox(['sh', '-c', 'kill -TERM $$']).status).toBe(128 + 15);
  });

  it("gives the command only the sandbox's environment", () => {
    const r = carapace(['run', '--env', 'FOO=bar', '--', 'sh', '-c', 'env | sort'], {
      env: { CALLER_SECRET: 'must-not-leak' },
    });
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('FOO=bar');
    expect(r.stdout).toContain('HOME=/sandbox');
    expect(r.stdout).not.toContain('CALLER_SECRET');
    expect(r.stdout).not.toContain('CARAPACE_HOME');
  });
});

describe('--audit', () => {
  it('records what was enforced, and a finding for each Landlock feature the kernel lacks', () => {
    const audit = join(sharedTempDir(), 'audit.jsonl');
    const r = carapace(['run', '--audit', audit, '--', 'true'], { env: { CARAPACE_LANDLOCK_ABI_MAX: '5' } });
    expect(r.status).toBe(0);
    const events = readFileSync(audit, 'utf8')
      .trim()
      .split('\n')
      .map(
        (l) => JSON.parse(l) as { class_uid: number; activity_id: number; unmapped: Record<string, unknown> },
      );
    const lifecycle = events.filter((e) => e.class_uid === 6002).map((e) => e.activity_id);
    expect(lifecycle[0]).toBe(3); // start
    expect(lifecycle.at(-1)).toBe(4); // stop
    const landlock = events.find((e) => e.unmapped.landlock !== undefined)?.unmapped.landlock as {
      abi: number;
    };
    expect(landlock.abi).toBe(5);
    const seccomp = events.find((e) => e.unmapped.seccomp !== undefined)?.unmapped.seccomp as {
      installed: boolean;
    };
    expect(seccomp.installed).toBe(true);
    const missing = events.find((e) => e.class_uid === 2004)?.unmapped.missing as string[];
    expect(missing).toEqual(['scope_abstract_unix_socket', 'scope_signal']);
  });
});

describe('limits', () => {
  it('stops a fork bomb at the pids limit, and the host stays responsive', () => {
    const home = freshHome();
    const bomb = [
      'python3',
      '-c',
      [
        'import os, errno, time',
        'n = 0',
        'try:',
        '    while True:',
        '        if os.fork() == 0:',
        '            time.sleep(30); os._exit(0)',
        '        n += 1',
        'except OSError as e:',
        '    print(n, errno.errorcode[e.errno])',
      ].join('\n'),
    ];
    const r = runInSandbox(bomb, ['--policy', policyFile(LIMITED('pids: 32'))], home);
    expect(r.status).toBe(0);
    const [count, err] = r.stdout.trim().split(' ');
    expect(err).toBe('EAGAIN');
    expect(Number(count)).toBeLessThan(32);
    expect(spawnSync('true').status).toBe(0);
    expectNothingLeft(home);
  });

  it('kills a memory hog at the memory limit, and only the sandbox', () => {
    const home = freshHome();
    const audit = join(sharedTempDir(), 'audit.jsonl');
    const hog = ['python3', '-c', 'b = []\nwhile True: b.append(bytearray(16 << 20))'];
    const r = runInSandbox(hog, ['--policy', policyFile(LIMITED('memory: 128Mi')), '--audit', audit], home);
    expect(r.status).toBe(128 + 9);
    const stop = readFileSync(audit, 'utf8')
      .trim()
      .split('\n')
      .map(
        (l) => JSON.parse(l) as { class_uid: number; activity_id: number; unmapped: { oom_kills?: number } },
      )
      .find((e) => e.class_uid === 6002 && e.activity_id === 4);
    expect(stop?.unmapped.oom_kills).toBeGreaterThan(0);
    expect(spawnSync('true').status).toBe(0);
    expectNothingLeft(home);
  });
});

describe('identities', () => {
  it('runs two sandboxes as different host uids that cannot read each other', () => {
    const home = freshHome();
    const wsA = sharedTempDir('carapace-ws-');
    const wsB = sharedTempDir('carapace-ws-');
    const a = runInSandbox(['sh', '-c', 'echo a > /sandbox/a'], ['--name', 'a', '--workspace', wsA], home);
    const b = runInSandbox(['sh', '-c', 'echo b > /sandbox/b'], ['--name', 'b', '--workspace', wsB], home);
    expect([a.status, b.status]).toEqual([0, 0]);
    // Inside, both are uid 1000; on the host, each sandbox's files belong to its own uid.
    const uidA = statSync(join(wsA, 'a')).uid;
    const uidB = statSync(join(wsB, 'b')).uid;
    expect(uidA).not.toBe(uidB);
    for (const uid of [uidA, uidB]) expect(uid).toBeGreaterThanOrEqual(3_000_000);
    expect(statSync(wsA).uid).toBe(uidA);
    const peek = runInSandbox(
      ['ls', '/other'],
      ['--name', 'a', '--workspace', wsA, '--mount', `${wsB}:/other:ro`],
      home,
    );
    expect(peek.status).not.toBe(0);
    expect(peek.stderr).toMatch(/Permission denied/);
  });
});

describe('bad input: one clear line, non-zero exit, nothing left behind', () => {
  it.each([
    ['an unknown flag', ['run', '--bogus', '--', 'true'], /unknown option '--bogus'/],
    ['a missing command', ['run'], /missing required argument 'command'/],
    ['a bad --env', ['run', '--env', 'NOEQUALS', '--', 'true'], /--env "NOEQUALS": expected NAME=VALUE/],
    ['a bad --mount', ['run', '--mount', 'relative', '--', 'true'], /--mount "relative": expected HOST:PATH/],
    [
      'a network option without --policy',
      ['run', '--resolve', 'a.test=127.0.0.1', '--', 'true'],
      /--resolve needs --policy/,
    ],
  ])('%s', (_what, args, message) => {
    const home = freshHome();
    const r = carapace(args, { home });
    expect(r.status).not.toBe(0);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(message);
    expectNothingLeft(home);
  });

  it.each([
    ['--resolve', ['--resolve', 'no-equals-sign'], /--resolve "no-equals-sign": expected HOST=IP/],
    [
      '--credential',
      ['--credential', 'CARAPACE_TEST_UNSET_VAR'],
      /environment variable CARAPACE_TEST_UNSET_VAR is not set/,
    ],
    [
      '--upstream-ca',
      ['--upstream-ca', '/nonexistent/ca.pem'],
      /--upstream-ca \/nonexistent\/ca\.pem: cannot read/,
    ],
  ])('a bad %s', (_what, args, message) => {
    const home = freshHome();
    const r = carapace(['run', '--policy', policyFile(LIMITED('pids: 100')), ...args, '--', 'true'], {
      home,
    });
    expect(r.status).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(message);
    expectNothingLeft(home);
  });

  it('a bad --name: said with the option, exit 2 as every other bad option (it was 1)', () => {
    const home = freshHome();
    const r = carapace(['run', '--name', 'Bad Name', '--', 'true'], { home });
    expect(r.status).toBe(2);
    expect(r.stderr).toBe(
      `carapace: --name "Bad Name": use 1-63 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit\n`,
    );
    expectNothingLeft(home);
  });

  it('an --audit file in a directory that does not exist, or one that takes no lines (procfs): said, nothing made', () => {
    const home = freshHome();
    const parent = join(sharedTempDir(), 'no-such-dir');
    const missing = carapace(['run', '--audit', join(parent, 'a.jsonl'), '--', 'true'], { home });
    expect(missing.status).toBe(2);
    expect(missing.stderr).toBe(
      `carapace: --audit ${join(parent, 'a.jsonl')}: ${parent} does not exist (make the directory first)\n`,
    );
    expect(existsSync(parent)).toBe(false);
    const proc = carapace(['run', '--audit', '/proc/version', '--', 'true'], { home });
    expect(proc.status).toBe(2);
    expect(proc.stderr).toBe(
      'carapace: --audit /proc/version: /proc/version is in /proc, which takes no audit lines: name a file on a disk\n',
    );
    expectNothingLeft(home);
  });

  it('a policy with errors: file:line:col', () => {
    const home = freshHome();
    const bad = policyFile('version: 1\nfilesystem_policy:\n  read_only: [usr]\n');
    const r = carapace(['run', '--policy', bad, '--', 'true'], { home });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(new RegExp(`${bad}:3:\\d+: `));
    expectNothingLeft(home);
  });

  it('a workspace that is a file', () => {
    const home = freshHome();
    const file = join(sharedTempDir(), 'file');
    writeFileSync(file, '');
    const r = carapace(['run', '--workspace', file, '--', 'true'], { home });
    expect(r.status).toBe(2);
    expect(r.stderr.trim()).toBe(
      `carapace: workspace ${file} is not a directory: give a directory (or a path to create)`,
    );
    expectNothingLeft(home);
  });

  it('a command that does not exist: 127', () => {
    const home = freshHome();
    const r = carapace(['run', '--', 'no-such-command-xyz'], { home });
    expect(r.status).toBe(127);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/no-such-command-xyz.*not found|No such file/);
    expectNothingLeft(home);
  });

  it('hard_requirement on a Landlock feature the kernel lacks (simulated ABI 3): refused with 125', () => {
    const home = freshHome();
    const policy = policyFile(LIMITED('pids: 100').replace('best_effort', 'hard_requirement'));
    const r = carapace(['run', '--policy', policy, '--', 'true'], {
      home,
      env: { CARAPACE_LANDLOCK_ABI_MAX: '3' },
    });
    expect(r.status).toBe(125);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/landlock/i);
    expectNothingLeft(home);
  });
});
