/**
 * A sandbox held the way a gateway holds it (startSandbox with `control`, `logFile`, `detached`),
 * driven through its control socket: what it runs there is as confined as the agent, its output
 * goes to the log file, its end to exit.json, and it outlives the process that started it.
 */
import { chmodSync, existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { SandboxControl } from '../../src/sandbox/control/control.js';
import { LogFileError } from '../../src/sandbox/control/control-files.js';
import { hostIdentities } from '../../src/sandbox/identity/identity.js';
import { sweepDeadRuns } from '../../src/sandbox/sweep.js';
import { stateDirs } from '../../src/sandbox/state-dirs.js';
import { freshHome, REPO } from '../helpers/cli.js';
import { runStarter, writeStarter } from '../helpers/mask-guard.js';
import { requires } from '../helpers/premises.js';
import { pySyscall, runOnHost, sharedTempDir } from '../helpers/sandbox.js';
import { run, startHeld, type HeldSandbox } from './control-helpers.js';

let held: HeldSandbox | undefined;
afterEach(async () => {
  if (held) {
    held.started.process.signal('SIGKILL');
    await held.started.process.exited;
    await held.started.cleanup();
  }
  held = undefined;
});

const waitUntil = async (ready: () => boolean): Promise<void> => {
  while (!ready()) await new Promise((resolve) => setTimeout(resolve, 20));
};

describe('a sandbox held through its control socket', () => {
  it('runs an exec as confined as the agent: the same Landlock and seccomp refusals', async () => {
    // Reading the init (in the sandbox, not in the policy), ptrace, a new user namespace, a TCP
    // connect to a port Landlock does not open.
    const probe = (file: string) =>
      pySyscall(
        [
          `attempt(lambda: open(${JSON.stringify(file)}, "rb").read(1))`,
          'report(libc.ptrace(0, 0, 0, 0))',
          'report(libc.unshare(0x10000000))',
          'attempt(lambda: socket.create_connection(("127.0.0.1", 9), timeout=5))',
        ].join('\n'),
      );
    const [, , code] = probe('/.carapace/init');
    // The agent runs the probe, then waits: sh passes the code on as $0.
    held = await startHeld(['sh', '-c', 'python3 -c "$0"; exec sleep 600', code!]);
    let agentOut = '';
    held.started.process.stdout!.on('data', (d: Buffer) => (agentOut += d.toString()));
    const exec = await run(held.started.control!.exec({ argv: probe('/.carapace/init') }));
    expect(exec.stderr).toBe('');
    expect(exec.stdout.trim().split('\n')).toEqual(['EACCES', 'EPERM', 'EPERM', 'EACCES']);
    await waitUntil(() => agentOut.split('\n').length > 4);
    expect(agentOut.trim().split('\n')).toEqual(['EACCES', 'EPERM', 'EPERM', 'EACCES']);
    // Without the sandbox, as an unprivileged host user: the same file opens, ptrace(TRACEME) works.
    const host = runOnHost(probe(join(REPO, 'native', 'carapace-init')));
    expect(host.stdout.trim().split('\n').slice(0, 2)).toEqual(['ok', 'ok']);
  });

  it("keeps an exec's processes and the agent's apart (Landlock signal scope, ABI 6)", async (ctx) => {
    requires(ctx, 'landlock-abi-6');
    held = await startHeld(['sleep', '600']);
    const control = held.started.control!;
    const agentPid = (await control.status()).agentPid;
    const r = await run(control.exec({ argv: ['sh', '-c', `kill -0 ${agentPid} 2>&1; echo $?`] }));
    expect(r.stdout).toMatch(/Operation not permitted\n+1\n$/);
    // The host reaches the agent through PID 1.
    await control.signal('SIGTERM');
    expect((await held.started.process.exited).code).toBe(143);
  });

  it('leaves exit.json in the control directory (0700, the sandbox uid’s; the socket 0600)', async () => {
    held = await startHeld(['sleep', '600']);
    const dir = held.started.controlDir!;
    const st = statSync(dir);
    expect(st.mode & 0o777).toBe(0o700);
    expect(st.uid).toBe(held.started.identity.uid);
    expect(statSync(join(dir, 'control.sock')).mode & 0o777).toBe(0o600);
    expect(await held.started.control!.status()).toMatchObject({ running: true, exit: null });
    await held.started.control!.signal('SIGTERM');
    expect((await held.started.process.exited).code).toBe(143);
    expect(JSON.parse(readFileSync(join(dir, 'exit.json'), 'utf8'))).toMatchObject({ code: 143 });
  });
});

describe('a log file', () => {
  it("gets the agent's stdout and stderr as JSON lines; stdin is /dev/null", async () => {
    const logFile = join(sharedTempDir(), 'agent.log');
    held = await startHeld(['sh', '-c', 'echo out; echo err >&2; cat; echo end'], { logFile });
    await held.started.process.exited;
    const lines = readFileSync(logFile, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { s: string; d: string });
    // Each stream in its order; across the two pipes the init reads whichever it finds ready
    // first (a busy host has it find "out\nend\n" in one read before "err\n").
    const stream = (name: string) =>
      lines
        .filter((l) => l.s === name)
        .map((l) => l.d)
        .join('');
    expect(lines.every((l) => l.s === 'out' || l.s === 'err')).toBe(true);
    expect(stream('out')).toBe('out\nend\n'); // "end": cat read /dev/null's end at once
    expect(stream('err')).toBe('err\n');
    expect(statSync(logFile).mode & 0o777).toBe(0o600);
  });

  it('is refused inside a tree a sandbox writes: nothing created, nothing started', async () => {
    const home = freshHome();
    // <state>/sandboxes holds every sandbox's storage and default workspace.
    const inside = join(home, 'state', 'sandboxes', 'agent.log');
    const refused = await startHeld(['true'], { home, logFile: inside }).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(LogFileError);
    expect(refused).toMatchObject({ code: 'log-file-in-sandbox-tree', exitCode: 2 });
    expect(existsSync(inside)).toBe(false);
    expect(existsSync(join(home, 'run', 'sandboxes'))).toBe(true);
    expect(readdirSync(join(home, 'run', 'sandboxes')).filter((f) => f.endsWith('.lock'))).toEqual([]);
  });
});

describe('detached', () => {
  it('outlives the process that started it, which exits; the sandbox answers status and exec', async () => {
    const home = freshHome();
    const out = sharedTempDir();
    const logFile = join(out, 'agent.log');
    chmodSync(home, 0o711); // the sandbox uids pass through it to their runtime files
    const script = writeStarter(
      join(out, 'start.mjs'),
      {
        home,
        name: 'detached',
        command: ['sh', '-c', 'echo started; while :; do sleep 1; done'],
        detached: true,
        control: true,
        logFile,
      },
      'console.log(JSON.stringify({ socket: started.control.socketPath, initPid: started.process.initPid }));',
    );
    // It exits by itself: nothing of the sandbox's may keep it alive.
    const { stdout, stderr, code } = await runStarter(script);
    expect(stderr).toBe('');
    expect(code).toBe(0);
    const { socket, initPid } = JSON.parse(stdout) as { socket: string; initPid: number };
    const dirs = stateDirs({ CARAPACE_HOME: home });
    try {
      const control = new SandboxControl(socket);
      expect(await control.status()).toMatchObject({ running: true, exit: null });
      expect(await run(control.exec({ argv: ['sh', '-c', 'echo hello from $(hostname)'] }))).toEqual({
        stdout: 'hello from detached\n',
        stderr: '',
        code: 0,
      });
      // A sweep of dead runs sees the sandbox alive: its init owns the run record now.
      expect(await sweepDeadRuns(dirs, hostIdentities())).toEqual([]);
      await waitUntil(() => existsSync(logFile) && readFileSync(logFile, 'utf8').includes('started'));
      await control.signal('SIGTERM');
      const exitFile = join(socket, '..', 'exit.json');
      await waitUntil(() => existsSync(exitFile));
      expect(JSON.parse(readFileSync(exitFile, 'utf8'))).toMatchObject({ code: 143 });
      await waitUntil(() => {
        try {
          process.kill(initPid, 0);
          return false;
        } catch {
          return true;
        }
      });
    } finally {
      try {
        process.kill(initPid, 'SIGKILL');
      } catch {
        // gone
      }
      // Once it is gone, the sweep removes what it left (its runtime, cgroup, uid).
      await waitUntil(() => !existsSync(`/proc/${initPid}`));
      const lost = await sweepDeadRuns(dirs, hostIdentities());
      expect(lost.map((l) => [l.record.name, l.left])).toEqual([['detached', []]]);
    }
  });
});
