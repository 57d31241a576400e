/**
 * native/carapace, the command ./install.sh puts on PATH (native/carapace-front.c): a plain
 * `carapace run` goes to a running gateway from C; everything else, and every run it cannot send
 * (another option, no gateway), reaches the Node CLI with its arguments untouched; an argument
 * that is not UTF-8 is refused. Runs against the release and the ASan + UBSan builds
 * (native-build.ts). The run's own behaviour through the gateway is test/gateway/run.test.ts's, for
 * both clients.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { printable } from '../../src/policy/printable.js';
import { CLI, freshHome } from '../helpers/cli.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { holds } from '../helpers/premises.js';
import { nativeProgram } from './native-build.js';

const front = nativeProgram('carapace');

function runs(home: string): number {
  const dir = join(home, 'state', 'audit');
  let n = 0;
  for (const f of readdirSync(dir)) n += readFileSync(join(dir, f), 'utf8').match(/run by uid/g)?.length ?? 0;
  return n;
}

describe('the native front hands the CLI what is not a plain run', () => {
  const home = freshHome();
  const env = { PATH: process.env.PATH, CARAPACE_HOME: home };
  const both = (args: string[]) => {
    const ours = spawnSync(front, args, { encoding: 'utf8', env });
    const cli = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env });
    return { ours, cli };
  };

  it('passes --version, help and errors through unchanged', () => {
    for (const args of [['--version'], ['run', '--help'], ['no-such-command'], ['run', '--']]) {
      const { ours, cli } = both(args);
      expect({ status: ours.status, stdout: ours.stdout, stderr: ours.stderr }).toEqual({
        status: cli.status,
        stdout: cli.stdout,
        stderr: cli.stderr,
      });
    }
  });

  it('passes arguments with spaces, quotes and newlines as they are', () => {
    const file = join(home, 'a policy "with"\nodd name.yaml');
    writeFileSync(file, 'version: 1\nfilesystem_policy:\n  read_only: [/usr]\n');
    const { ours, cli } = both(['policy', 'validate', file]);
    expect(ours.status).toBe(0);
    expect(ours.stdout).toBe(cli.stdout);
  });

  it.skipIf(!holds('root'))(
    'a gateway that takes the connection and says nothing is waited for once, by the front alone',
    async () => {
      // A stand-in that accepts and never answers (a gateway frozen, or busy past PATIENCE_MS):
      // the front says so and hands the run to the CLI with --no-gateway, which does not ask (and
      // wait 15 s) again.
      const silent = freshHome();
      mkdirSync(join(silent, 'run'), { recursive: true });
      const held: Socket[] = [];
      const server = createServer((s) => held.push(s));
      await new Promise<void>((r) => server.listen(join(silent, 'run', 'gateway.sock'), r));
      try {
        const child = spawn(front, ['run', '--', 'sh', '-c', 'echo alone'], {
          env: { PATH: process.env.PATH, CARAPACE_HOME: silent },
        });
        let out = '';
        let err = '';
        child.stdout.on('data', (d: Buffer) => (out += d.toString()));
        child.stderr.on('data', (d: Buffer) => (err += d.toString()));
        const status = await new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
        expect(out).toBe('alone\n');
        expect(status).toBe(0);
        expect(err.match(/did not answer within 15 s/g)).toHaveLength(1);
        expect(held).toHaveLength(1);
      } finally {
        for (const s of held) s.destroy();
        server.close();
      }
    },
    90_000,
  );

  it.skipIf(!holds('root'))('runs in the process when no gateway answers', () => {
    const r = spawnSync(front, ['run', '--', 'sh', '-c', 'echo alone; exit 3'], { encoding: 'utf8', env });
    expect(r.stdout).toBe('alone\n');
    expect(r.status).toBe(3);
  });
});

describe.skipIf(!holds('root'))('the native front sends a plain run to the gateway', () => {
  let gw: TestGateway;
  const run = (args: string[], input?: string) =>
    spawnSync(front, ['run', ...args], {
      encoding: 'utf8',
      input,
      env: { PATH: process.env.PATH, CARAPACE_HOME: gw.home, TERM: 'xterm-test' },
    });
  beforeAll(async () => {
    gw = await startTestGateway();
  });
  afterAll(async () => {
    await gw?.stop();
  });

  it('sends the command, its stdin, --env and TERM, and returns its output and status', () => {
    const before = runs(gw.home);
    const r = run(
      [
        '--env',
        'A=1',
        '--env=B=two words',
        '--env',
        'A=last',
        '--',
        'sh',
        '-c',
        'read l; echo "$l|$A|$B|$TERM"; echo e >&2; exit 4',
      ],
      'in\n',
    );
    expect(r.stdout).toBe('in|last|two words|xterm-test\n');
    expect(r.stderr).toBe('e\n');
    expect(r.status).toBe(4);
    expect(runs(gw.home)).toBe(before + 1);
  });

  it('escapes what JSON must: quotes, backslashes, control characters, non-ASCII', () => {
    const arg = 'q"b\\s\tt\u0001é✓';
    const r = run(['--', 'printf', '%s', arg]);
    expect(r.stdout).toBe(arg);
  });

  it('refuses an argument that is not UTF-8 with one line, exit 2, before anything runs', () => {
    // Node and the gateway's JSON read arguments as text: the byte 0xff would arrive as U+FFFD, a
    // name the caller did not give. A host shell makes the byte.
    const before = runs(gw.home);
    for (const args of [
      `run -- sh -c 'printf %s "$1" | od -An -tx1' sh "$(printf 'a\\377b')"`,
      `policy validate "$(printf 'p\\351.yaml')"`,
    ]) {
      const r = spawnSync('sh', ['-c', `exec "$0" ${args}`, front], {
        encoding: 'utf8',
        env: { PATH: process.env.PATH, CARAPACE_HOME: gw.home },
      });
      expect(r.status).toBe(2);
      expect(r.stdout).toBe('');
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(
        /^carapace: argument \d+ \("(a\\xffb|p\\xe9\.yaml)"\) is not valid UTF-8: .*rename it/,
      );
    }
    expect(runs(gw.home)).toBe(before);
  });

  it("escapes the gateway's word on a command that cannot start as the Node CLI does (printable.ts)", () => {
    // C0, an OSC, C1, bidi and zero-width characters escaped; é, ✓ and a 4-byte character kept.
    const name = '/nonexistent\x1b]0;t\x07é✓\u{1f600}\u202e\u2066\ufeff\x9b\x01';
    const r = run(['--', name]);
    expect(r.status).toBe(127);
    expect(r.stderr).toBe(`carapace-init: exec: ${printable(name)}: No such file or directory\n`);
    expect(r.stderr).toContain('\\x1b]0;t\\x07é✓\u{1f600}\\u{202e}\\u{2066}\\u{feff}\\x9b\\x01');
  });

  it('says why a command cannot start, with exit 127', () => {
    const r = run(['--', '/nonexistent']);
    expect(r.status).toBe(127);
    expect(r.stderr).toMatch(/\/nonexistent: No such file or directory/);
  });
});
