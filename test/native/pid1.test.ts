/**
 * carapace-init's duties as PID 1: exit status, signals, reaping, clean-up when the agent exits,
 * and what the agent can see of PID 1.
 */
import { describe, expect, it } from 'vitest';
import { commandLines } from '../helpers/processes.js';
import { events, python, runSandbox, startSandbox, USUAL_PATHS } from './harness.js';

describe('carapace-init as PID 1', () => {
  it("exits with the agent's exit status", async () => {
    const r = await runSandbox({ init: USUAL_PATHS, command: ['sh', '-c', 'echo hello; exit 7'] });
    expect(r.stdout).toBe('hello\n');
    expect(r.code).toBe(7);
  });

  it('exits 128+signal when the agent is killed', async () => {
    const r = await runSandbox({ init: USUAL_PATHS, command: ['sh', '-c', 'kill -KILL $$'] });
    expect(r.code).toBe(128 + 9);
  });

  it('runs the agent as PID 2 under PID 1, as the sandbox user', async () => {
    const r = await runSandbox({
      init: USUAL_PATHS,
      command: python('import os; print(os.getpid(), os.getppid(), os.getuid())'),
    });
    expect(r.stdout).toBe('2 1 1000\n');
  });

  it('forwards SIGTERM to the agent and exits with what the agent makes of it', async () => {
    const sandbox = startSandbox({
      init: USUAL_PATHS,
      command: ['sh', '-c', 'trap "echo got TERM; exit 42" TERM; echo ready; while :; do sleep 0.05; done'],
    });
    await sandbox.waitForStdout('ready');
    process.kill(await sandbox.initPid, 'SIGTERM');
    const r = await sandbox.result;
    expect(r.stdout).toContain('got TERM');
    expect(r.code).toBe(42);
  });

  it('forwards SIGINT and SIGHUP, and an agent that does not catch them dies of them', async () => {
    for (const [signal, number] of [
      ['SIGINT', 2],
      ['SIGHUP', 1],
    ] as const) {
      const sandbox = startSandbox({
        init: USUAL_PATHS,
        // Short sleeps: CPython checks for a caught signal only between calls, so a signal that
        // lands just before one long sleep would wait for its end.
        command: python('import time\nprint("ready", flush=True)\nwhile True: time.sleep(0.05)'),
      });
      await sandbox.waitForStdout('ready');
      process.kill(await sandbox.initPid, signal);
      const r = await sandbox.result;
      // Python turns SIGINT into KeyboardInterrupt and exits 1 after a traceback; SIGHUP kills it.
      if (signal === 'SIGINT') expect(r.stderr).toContain('KeyboardInterrupt');
      else expect(r.code).toBe(128 + number);
    }
  });

  it('reaps orphans: a double-forked grandchild never lingers as a zombie', async () => {
    const script = `
import os, time
pid = os.fork()
if pid == 0:
    if os.fork() == 0:          # the grandchild: orphaned when its parent exits, re-parented to PID 1
        time.sleep(0.3)
        os._exit(0)
    os._exit(0)
os.waitpid(pid, 0)
time.sleep(1.0)                 # the grandchild has exited by now
zombies = []
for entry in os.listdir('/proc'):
    if entry.isdigit():
        try:
            stat = open(f'/proc/{entry}/stat').read()
        except FileNotFoundError:
            continue
        if stat.rsplit(')', 1)[1].split()[0] == 'Z':
            zombies.append(entry)
print('zombies', zombies)
`;
    const r = await runSandbox({ init: USUAL_PATHS, command: python(script) });
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('zombies []\n');
    expect(r.code).toBe(0);
  });

  it('kills what the agent left behind when the agent exits', async () => {
    const marker = `carapace-leftover-${process.pid}-${Date.now()}`;
    // Had the init waited for the leftover, this would take 300 s and hit the test's timeout.
    const r = await runSandbox({
      init: USUAL_PATHS,
      command: ['sh', '-c', `setsid sh -c 'exec -a ${marker} sleep 300' & sleep 0.2; exit 3`],
    });
    expect(r.code).toBe(3);
    expect(commandLines().filter((c) => c.includes(marker))).toEqual([]);
  });

  it("keeps PID 1 out of the agent's reach: not traceable, /proc/1/fd closed, no inherited fds", async () => {
    const script = `
import os, json
out = {}
for path in ('/proc/1/fd', '/proc/1/environ', '/proc/1/mem'):
    try:
        if path.endswith('fd'):
            os.listdir(path)
        else:
            open(path, 'rb').read(1)
        out[path] = 'readable'
    except OSError as e:
        out[path] = e.errno
out['own_fds'] = sorted(int(f) for f in os.listdir('/proc/self/fd'))
print(json.dumps(out))
`;
    const r = await runSandbox({ init: USUAL_PATHS, command: python(script) });
    const out = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(out['/proc/1/fd']).toBe(13); // EACCES
    expect(out['/proc/1/environ']).toBe(13);
    expect(out['/proc/1/mem']).toBe(13);
    expect(out.own_fds).toEqual([0, 1, 2, 3]); // 3 is listdir's own
  });

  it('hands the agent none of its own fds: the status fd is closed before the agent runs', async () => {
    const sandbox = startSandbox({ init: USUAL_PATHS, command: ['sleep', '30'] });
    const status = await sandbox.started;
    expect(status.at(-1)).toEqual({ event: 'exec' });
    // The status stream ends while the agent still runs.
    const stream = sandbox.child.stdio[3] as import('node:stream').Readable;
    await new Promise<void>((resolve) => (stream.readableEnded ? resolve() : stream.on('end', resolve)));
    expect(sandbox.child.exitCode).toBeNull();
    process.kill(await sandbox.initPid, 'SIGTERM');
    const r = await sandbox.result;
    expect(r.code).toBe(128 + 15);
    expect(events(r, 'exec')).toHaveLength(1);
  });
});
