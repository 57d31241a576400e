/**
 * One gateway per run directory (docs/gateway.md, "Which gateway"), judged by the pid file's pid
 * and start time. A gateway killed under a parent that does not reap it at once (an init that is
 * not systemd, a container's) is a zombie with that very pid and start time: `gateway start`
 * right after a `kill -9` took it for a live gateway and refused ("a gateway already runs here").
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, describe, expect, it } from 'vitest';
import { GATEWAY_NODE_FLAGS } from '../../src/cli/gateway/gateway-client.js';
import { CLI, freshHome } from '../helpers/cli.js';
import { cliAs, startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { holds } from '../helpers/premises.js';

const state = (pid: number) => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.charAt(stat.lastIndexOf(')') + 2);
  } catch {
    return 'gone';
  }
};

describe.skipIf(!holds('root'))('the gateway pid file', () => {
  let parent: ChildProcess | undefined;
  let next: TestGateway | undefined;
  afterAll(async () => {
    await next?.stop();
    parent?.kill('SIGKILL');
  });

  it('a killed gateway that is not reaped yet does not hold its place', async () => {
    const home = freshHome();
    chmodSync(home, 0o711);
    // The gateway under a parent that never waits for it: `sh` starts it, then becomes `sleep`.
    const args = [...GATEWAY_NODE_FLAGS, CLI, 'gateway', 'run'].map((a) => `'${a}'`).join(' ');
    parent = spawn('sh', ['-c', `'${process.execPath}' ${args} & exec sleep 600`], {
      env: { ...process.env, CARAPACE_HOME: home },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    await new Promise<void>((resolve) =>
      parent!.stdout!.on('data', (d: Buffer) => {
        out += String(d);
        if (out.includes('"gateway listening"')) resolve();
      }),
    );
    const pid = Number(readFileSync(join(home, 'run', 'gateway.pid'), 'utf8').split(' ')[0]);
    process.kill(pid, 'SIGKILL');
    while (state(pid) !== 'Z') await sleep(20); // ended, not reaped
    next = await startTestGateway([], home);
    expect(cliAs(home, ['gateway', 'status']).stdout).toMatch(/^gateway pid \d+, /);
    expect(state(pid)).toBe('Z'); // the premise held throughout
  });
});
