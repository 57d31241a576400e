/**
 * `carapace run` served by a running gateway (src/gateway/sandboxes/one-off-runs.ts, src/cli/run/run-gateway.ts):
 * the command gets what a one-off run gives it (stdout, stderr, stdin, exit status, --env, the
 * init's reason when it cannot start), each run has a sandbox of its own that nothing of an
 * earlier run reaches, the sandboxes are not the API's to name, and nothing is left once the run
 * (or its client) is gone. Runs the gateway cannot serve, and --no-gateway, run in the process.
 */
import { spawn, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { printable } from '../../src/policy/printable.js';
import { CLI, REPO } from '../helpers/cli.js';
import { auditText, sandboxesOnHost, startTestGateway, until, type TestGateway } from '../helpers/gateway.js';
import { holds } from '../helpers/premises.js';
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * Both clients a user may run: the Node CLI (dist/cli/carapace.js) and the native front that
 * ./install.sh puts on PATH (native/carapace), which sends a plain run itself.
 */
const CLIENTS: [string, string[]][] = [
  ['the Node CLI', [process.execPath, CLI]],
  ['the native front on PATH', [join(REPO, 'native', 'carapace')]],
];

describe.skipIf(!holds('root')).each(CLIENTS)(
  'carapace run through a running gateway, from %s',
  (_, client) => {
    let gw: TestGateway;
    const [file, ...pre] = client as [string, ...string[]];
    const run = (args: string[], input?: string) =>
      spawnSync(file, [...pre, 'run', ...args], {
        encoding: 'utf8',
        input,
        env: { PATH: process.env.PATH, CARAPACE_HOME: gw.home },
        timeout: 60_000,
      });
    const runsServed = () => auditText(gw).match(/run by uid 0:/g)?.length ?? 0;

    beforeAll(async () => {
      gw = await startTestGateway();
    });
    afterAll(async () => {
      await gw?.stop();
    });

    it('gives the command its stdout, stderr and exit status, in a sandbox the gateway started', () => {
      const r = run(['--', 'sh', '-c', 'echo out; echo err >&2; exit 7']);
      expect(r.stdout).toBe('out\n');
      expect(r.stderr).toBe('err\n');
      expect(r.status).toBe(7);
      expect(auditText(gw)).toMatch(/run by uid 0: sh -c echo out/);
    });

    it('passes stdin and --env as a one-off run does', () => {
      const r = run(
        ['--env', 'GREETING=hi there', '--', 'sh', '-c', 'read line; echo "$GREETING/$line"'],
        'piped\n',
      );
      expect(r.stdout).toBe('hi there/piped\n');
      expect(r.status).toBe(0);
      const bad = run(['--env', '1X=y', '--', 'true']);
      expect(bad.status).toBe(2);
      expect(bad.stderr).toMatch(/--env "1X=y": expected NAME=VALUE/);
    });

    it('gives a command whose output pipe closed SIGPIPE, as a one-off run does (| head -1)', () => {
      const r = spawnSync(
        'bash',
        ['-c', `${client.join(' ')} run -- yes | head -1; echo "status \${PIPESTATUS[0]}"`],
        {
          encoding: 'utf8',
          env: { PATH: process.env.PATH, CARAPACE_HOME: gw.home },
          timeout: 60_000,
        },
      );
      expect(r.stdout).toBe('y\nstatus 141\n');
      expect(r.stderr).not.toMatch(/EPIPE|carapace/);
    });

    it('says why a command cannot start, with the exit status a one-off run gives', () => {
      const missing = run(['--', '/nonexistent']);
      expect(missing.status).toBe(127);
      expect(missing.stderr).toMatch(/\/nonexistent: No such file or directory/);
      const inProcess = run(['--no-gateway', '--', '/nonexistent']);
      expect(inProcess.status).toBe(missing.status);
    });

    it("shows the gateway's word on a run that cannot start escaped: an escape sequence, C1 and bidi never reach the terminal", () => {
      // The name is the caller's, but the message is the gateway's (the init's reason): each
      // client escapes it as src/policy/printable.ts does, the native front in C.
      const name = '/nonexistent\x1b[2J\x9b1m\u202eexe\u200b\x7f';
      const r = run(['--', name]);
      expect(r.status).toBe(127);
      expect(r.stderr).toBe(`carapace-init: exec: ${printable(name)}: No such file or directory\n`);
      expect(r.stderr).toContain('/nonexistent\\x1b[2J\\x9b1m\\u{202e}exe\\u{200b}\\x7f:');
    });

    it('gives each run a sandbox of its own: nothing an earlier run left reaches the next', () => {
      const first = run([
        '--',
        'sh',
        '-c',
        'echo left > /tmp/mark; echo left > /sandbox/mark; (sleep 300 &) ; hostname',
      ]);
      expect(first.status).toBe(0);
      const second = run([
        '--',
        'sh',
        '-c',
        'ls /tmp /sandbox; for p in /proc/[0-9]*; do tr "\\000" " " < $p/cmdline; echo; done | grep -q "slee[p] 300" && echo found || echo none; hostname',
      ]);
      expect(second.status).toBe(0);
      expect(second.stdout).not.toContain('mark');
      expect(second.stdout).toContain('none');
      expect(second.stdout.trim().split('\n').pop()).not.toBe(first.stdout.trim());
    });

    it('keeps run sandboxes out of the API, and leaves one waiting at most', async () => {
      const before = runsServed();
      expect(run(['--', 'true']).status).toBe(0);
      expect(runsServed()).toBeGreaterThan(before);
      const listed = spawnSync(process.execPath, [CLI, 'sandbox', 'list', '-o', 'json'], {
        encoding: 'utf8',
        env: { PATH: process.env.PATH, CARAPACE_HOME: gw.home },
      });
      expect(JSON.parse(listed.stdout)).toEqual([]);
      // The run's own sandbox is removed once it is over; the one for the next run may still start.
      await until('at most one sandbox left (the one waiting)', () => sandboxesOnHost(gw).length <= 1);
      const [waiting] = sandboxesOnHost(gw);
      if (waiting !== undefined) {
        const exec = spawnSync(process.execPath, [CLI, 'sandbox', 'exec', waiting, '--', 'true'], {
          encoding: 'utf8',
          env: { PATH: process.env.PATH, CARAPACE_HOME: gw.home },
        });
        expect(exec.status).toBe(3);
        expect(exec.stderr).toMatch(/no sandbox named/);
      }
    });

    it('ends the sandbox when the client is killed mid-run', async () => {
      const child = spawn(file, [...pre, 'run', '--', 'sh', '-c', 'echo started; exec sleep 600'], {
        env: { PATH: process.env.PATH, CARAPACE_HOME: gw.home },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      await new Promise<void>((resolve) => child.stdout!.once('data', () => resolve()));
      const running = sandboxesOnHost(gw);
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
      const pgrep = () => spawnSync('pgrep', ['-f', '^sleep 600$'], { encoding: 'utf8' }).stdout.trim();
      await until('the run\'s "sleep 600" killed with its sandbox', () => pgrep() === '');
      // Its sandbox is gone from the host; only the one waiting for the next run may remain.
      await until("the killed run's sandbox removed", () => {
        const now = sandboxesOnHost(gw);
        return now.filter((n) => running.includes(n)).length <= 1 && now.length <= 1;
      });
    });

    it.skipIf(!holds('tmux'))(
      'runs in a terminal as a terminal: a tty of its size, keys typed, Ctrl-C',
      async () => {
        // A tmux server of its own, as below.
        const session = `crun${process.pid}-${Date.now()}`;
        const tmux = (...args: string[]) => spawnSync('tmux', ['-L', session, ...args], { encoding: 'utf8' });
        const screen = () => tmux('capture-pane', '-p', '-J', '-t', session).stdout;
        const shows = async (pattern: RegExp) => {
          await until(`the terminal shows ${String(pattern)}: ${screen()}`, () => pattern.test(screen()));
        };
        const script =
          'test -t 0 && test -t 1 && echo is-a-tty; stty size; read x; echo got-$x; ' +
          'trap "echo interrupted; exit 3" INT; echo waiting; while :; do sleep 0.1; done';
        const command = `CARAPACE_HOME=${gw.home} ${client.join(' ')} run -- sh -c '${script}'; echo exit-$?; sleep 60`;
        expect(tmux('new-session', '-d', '-s', session, '-x', '100', '-y', '30', command).status).toBe(0);
        try {
          await shows(/is-a-tty\s+30 100/);
          tmux('send-keys', '-t', session, 'abc', 'Enter');
          await shows(/got-abc/);
          await shows(/waiting/);
          await sleep(200);
          tmux('send-keys', '-t', session, 'C-c');
          await shows(/interrupted\s+exit-3/);
        } finally {
          tmux('kill-session', '-t', session);
        }
      },
    );

    it.skipIf(!holds('tmux'))('runs as a background job of a terminal without being stopped', async () => {
      // A tmux server of its own (-L): this test runs once per client, and a new session made on
      // a server still exiting from the last one's kill-session fails ("server exited").
      const session = `cbg${process.pid}-${Date.now()}`;
      const tmux = (...args: string[]) => spawnSync('tmux', ['-L', session, ...args], { encoding: 'utf8' });
      const screen = () => tmux('capture-pane', '-p', '-J', '-t', session).stdout;
      expect(tmux('new-session', '-d', '-s', session, '-x', '100', '-y', '30', 'bash --norc').status).toBe(0);
      try {
        // The job reads its stdin: in the background it must end (EOF), not stop the client (SIGTTIN).
        tmux(
          'send-keys',
          '-t',
          session,
          `CARAPACE_HOME=${gw.home} ${client.join(' ')} run -- sh -c 'cat; echo bg-done' & wait $!; echo "waited $?"`,
          'Enter',
        );
        await until(`the job ends: ${screen()}`, () =>
          /bg-done\s+(\[1\]\+\s+Done.*\s+)?waited 0/.test(screen()),
        );
        expect(screen()).not.toMatch(/Stopped/);
      } finally {
        tmux('kill-session', '-t', session);
      }
    });

    it('leaves runs it cannot serve, and --no-gateway, to the process', () => {
      const before = runsServed();
      const named = run(['--name', 'inproc', '--', 'hostname']);
      expect(named.stdout.trim()).toBe('inproc');
      expect(run(['--no-gateway', '--', 'true']).status).toBe(0);
      expect(runsServed()).toBe(before);
    });

    it('removes every run sandbox when the gateway stops, and a run cut off by it exits 125', async () => {
      expect(run(['--', 'true']).status).toBe(0);
      // A run still going when the gateway stops: its client says so and exits 125 (Carapace's
      // failure, as a sandbox that could not start), never a status the command could have given.
      const child = spawn(file, [...pre, 'run', '--', 'sh', '-c', 'echo started; exec sleep 600'], {
        env: { PATH: process.env.PATH, CARAPACE_HOME: gw.home },
      });
      let out = '';
      let err = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
      await until('the run started in its sandbox', () => out.includes('started'));
      await gw.stop();
      expect(await exited).toBe(125);
      expect(err).toMatch(/the gateway went away \(stopped or restarted\) before the command ended/);
      expect(sandboxesOnHost(gw)).toEqual([]);
      // With no gateway, the run is the process's own.
      const r = run(['--', 'sh', '-c', 'echo alone']);
      expect(r.stdout).toBe('alone\n');
    });
  },
);
