/**
 * Real NemoClaw and OpenShell policies run unchanged (issue 9). They list /usr and /lib but not
 * /bin or /lib64: in their containers those are merged-/usr symlinks that simply exist. The
 * sandbox mirrors the host's root-level symlinks whose target it shows, and on a host that has not
 * merged /usr (a test root whose /bin and /lib64 are real directories) the directories merged-/usr
 * folds into a listed /usr. Every policy must start the usual tools either way, with its
 * include_workdir honoured (/sandbox writable).
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { carapace, freshHome } from '../helpers/cli.js';
import { requires } from '../helpers/premises.js';
import { pySyscall, runInSandbox } from '../helpers/sandbox.js';
import { nonMergedRoot, runInTestRoot, type TestRoot } from '../helpers/test-root.js';
import { rmSync } from 'node:fs';
import { COMPAT, POLICIES, yamlFiles } from '../policy/helpers.js';

const POLICY_FILES = [
  join(COMPAT, 'nemoclaw', 'openclaw-sandbox.yaml'),
  ...yamlFiles(join(COMPAT, 'openshell')),
];
const short = (file: string) => file.slice(COMPAT.length + 1);

/** Each tool, then a write into /sandbox (include_workdir: true in every one of these files). */
const TOOLS = [
  'ls /bin/sh',
  '/usr/bin/env >/dev/null && echo env',
  'python3 -c "print(\'python\')"',
  'node -e "console.log(\'node\')"',
  'curl --version >/dev/null && echo curl',
  'echo w > /sandbox/w && cat /sandbox/w',
].join(' && ');
const TOOLS_OUT = '/bin/sh\nenv\npython\nnode\ncurl\nw\n';

describe('every compat policy starts the usual tools on this host', () => {
  for (const file of POLICY_FILES) {
    describe(short(file), () => {
      it('/usr/bin/true', () => {
        const r = runInSandbox(['/usr/bin/true'], ['--policy', file]);
        expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: '' });
      });

      it("sh -c 'ls /bin/sh', env, python3, node, curl; /sandbox writable", () => {
        const r = runInSandbox(['sh', '-c', TOOLS], ['--policy', file]);
        expect({ status: r.status, stdout: r.stdout, stderr: r.stderr }).toEqual({
          status: 0,
          stdout: TOOLS_OUT,
          stderr: '',
        });
      });

      it('python3 -c 1', () => {
        const r = runInSandbox(['python3', '-c', '1'], ['--policy', file]);
        expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: '' });
      });
    });
  }
});

describe('every compat policy starts the usual tools on a host that has not merged /usr', () => {
  let root: TestRoot;
  beforeAll(() => {
    root = nonMergedRoot();
  });
  afterAll(() => rmSync(root.root, { recursive: true, force: true }));

  for (const file of POLICY_FILES) {
    it(short(file), (ctx) => {
      requires(ctx, 'root', 'x86_64');
      const home = freshHome();
      // /bin and /lib64 are the test root's real directories; /bin/sh is its own copy of dash.
      const layout =
        'test -d /bin && test ! -L /bin && test -d /lib64 && test ! -L /lib64 && readlink /bin/sh';
      const r = runInTestRoot(root, ['--policy', file, '--', '/bin/sh', '-c', `${layout} && ${TOOLS}`], home);
      expect({ status: r.status, stdout: r.stdout, stderr: r.stderr }).toEqual({
        status: 0,
        stdout: `dash\n${TOOLS_OUT}`,
        stderr: '',
      });
      const t = runInTestRoot(root, ['--policy', file, '--', '/usr/bin/true'], home);
      expect({ status: t.status, stderr: t.stderr }).toEqual({ status: 0, stderr: '' });
    });
  }
});

describe('policies/openclaw.yaml', () => {
  it("the OpenClaw gateway's port 18789 may be bound, another may not", (ctx) => {
    requires(ctx, 'landlock-abi-4');
    const bind = (port: number) => `attempt(lambda: socket.socket().bind(("127.0.0.1", ${port})))`;
    // With the key its inference route names, as a user runs it (without, one warning says so).
    const r = carapace(
      [
        'run',
        '--policy',
        join(POLICIES, 'openclaw.yaml'),
        '--best-effort-limits',
        '--credential',
        'NVIDIA_API_KEY',
        '--',
        ...pySyscall(`${bind(18789)}\n${bind(18790)}`),
      ],
      { env: { NVIDIA_API_KEY: 'nvapi-test' } },
    );
    expect(r.stderr).toBe('');
    expect(r.stdout.trim().split('\n')).toEqual(['ok', 'EACCES']);
  });
});
