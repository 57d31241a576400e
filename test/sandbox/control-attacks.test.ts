/**
 * Attacks on the control socket from inside the sandbox. Whoever connects to it controls the
 * sandbox (runs commands in it, reaches its listeners, signals the agent, reads its events), so
 * neither the agent nor anything the socket itself runs may reach it: not by its host path, not
 * through PID 1's fd of its directory, not by searching the filesystem, not by an fd inherited.
 * The baseline: the same uid on the host, outside the sandbox, connects.
 */
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { newSandboxName, sandboxPaths } from '../../src/sandbox/sandbox.js';
import { stateDirs } from '../../src/sandbox/state-dirs.js';
import { freshHome } from '../helpers/cli.js';
import { runOnHost } from '../helpers/sandbox.js';
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

/** The fd by which the init holds the control directory (launch-args.ts: FD_CONTROL). */
const INIT_CONTROL_FD = 11;

function probe(socketPath: string): string[] {
  return [
    'python3',
    '-c',
    [
      'import errno, json, os, socket, stat',
      'out = {}',
      `for path in (${JSON.stringify(socketPath)}, "/proc/1/fd/${INIT_CONTROL_FD}/control.sock"):`,
      '    try:',
      '        socket.socket(socket.AF_UNIX).connect(path); out[path] = "connected"',
      '    except OSError as e:',
      '        out[path] = errno.errorcode[e.errno]',
      'try: out["pid1_fds"] = os.listdir("/proc/1/fd")',
      'except OSError as e: out["pid1_fds"] = errno.errorcode[e.errno]',
      'found = []',
      'for root, dirs, files in os.walk("/", onerror=lambda e: None):',
      '    if root == "/" and "proc" in dirs: dirs.remove("proc")',
      '    for f in files:',
      '        try:',
      '            if stat.S_ISSOCK(os.lstat(os.path.join(root, f)).st_mode): found.append(os.path.join(root, f))',
      '        except OSError: pass',
      'out["sockets"] = found',
      'out["fds"] = sorted(int(f) for f in os.listdir("/proc/self/fd"))',
      'print(json.dumps(out), flush=True)',
    ].join('\n'),
  ];
}

describe('the control socket', () => {
  it('cannot be reached from inside, by the agent or by what the socket runs: not by path, not through PID 1, not by search', async () => {
    // The agent probes for its own socket, whose host path is known before it starts.
    const home = freshHome();
    const name = newSandboxName();
    const socketPath = join(
      sandboxPaths(stateDirs({ CARAPACE_HOME: home }), name).runtime,
      'control',
      'control.sock',
    );
    held = await startHeld(['sh', '-c', 'python3 -c "$0"; exec sleep 600', probe(socketPath)[2]!], {
      home,
      name,
    });
    let agentOut = '';
    held.started.process.stdout!.on('data', (d: Buffer) => (agentOut += d.toString()));
    expect(held.started.controlDir).toBe(join(socketPath, '..'));
    const expected = {
      [socketPath]: 'ENOENT', // its directory is not mounted inside
      [`/proc/1/fd/${INIT_CONTROL_FD}/control.sock`]: 'EACCES', // PID 1's, and PID 1 is not dumpable
      pid1_fds: 'EACCES',
      sockets: [],
      fds: [0, 1, 2, 3], // stdio, and the listing's own fd
    };
    // What the socket runs, the same.
    const fromExec = await run(held.started.control!.exec({ argv: probe(socketPath) }));
    expect(fromExec.stderr).toBe('');
    expect(JSON.parse(fromExec.stdout)).toEqual(expected);
    while (!agentOut.includes('\n')) await new Promise((resolve) => setTimeout(resolve, 20));
    expect(JSON.parse(agentOut)).toEqual(expected);
    // Outside the sandbox, the sandbox's own uid connects: only the sandbox stands in the way.
    const host = runOnHost(
      probe(socketPath),
      held.started.identity.rootless ? process.getuid!() : held.started.identity.uid,
    );
    expect(JSON.parse(host.stdout)).toMatchObject({ [socketPath]: 'connected' });
  });
});
