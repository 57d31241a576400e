/**
 * `carapace sandbox connect` in a real terminal (tmux): typing, a window resize the shell sees,
 * Ctrl-C that interrupts the foreground command and not the session, and the detach key (Ctrl-P
 * Ctrl-Q) that leaves the sandbox running.
 */
import { spawnSync } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI } from '../helpers/cli.js';
import { cliAs, startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { holds, requires } from '../helpers/premises.js';

const tmux = (...args: string[]) => spawnSync('tmux', args, { encoding: 'utf8' });
const session = `cpty${process.pid}`;

/** What the pane shows now. */
const screen = () => tmux('capture-pane', '-p', '-J', '-t', session).stdout;

async function shows(pattern: RegExp): Promise<string> {
  for (;;) {
    const text = screen();
    if (pattern.test(text)) return text;
    await sleep(50);
  }
}

describe.skipIf(!holds('root', 'tmux'))('sandbox connect, in a terminal', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startTestGateway();
    expect(cliAs(gw.home, ['sandbox', 'create', '--name', 'box', '--', 'sleep', 'infinity']).stdout).toBe(
      'box running\n',
    );
    const command = `env CARAPACE_HOME=${gw.home} TERM=xterm ${process.execPath} ${CLI} sandbox connect box; echo "[exit $?]"; sleep 600`;
    expect(tmux('new-session', '-d', '-s', session, '-x', '100', '-y', '30', command).status).toBe(0);
  });
  afterAll(async () => {
    tmux('kill-session', '-t', session);
    await gw?.stop();
  });

  it('types, resizes, takes Ctrl-C, and detaches with the sandbox still running', async (ctx) => {
    requires(ctx, 'root', 'tmux');
    tmux('send-keys', '-t', session, 'echo typed-$((40+2))', 'Enter');
    await shows(/^typed-42$/m);
    await shows(/^sandbox@box/m); // a prompt of the sandbox's own user and host
    tmux('send-keys', '-t', session, 'stty size', 'Enter');
    await shows(/^30 100$/m);
    tmux('resize-window', '-t', session, '-x', '120', '-y', '40');
    tmux('send-keys', '-t', session, 'clear; stty size', 'Enter');
    await shows(/^40 120$/m);

    // Ctrl-C interrupts the foreground command inside, and only that.
    tmux('send-keys', '-t', session, 'sleep 300; echo slept', 'Enter');
    await sleep(300);
    tmux('send-keys', '-t', session, 'C-c');
    tmux('send-keys', '-t', session, 'echo after-ctrl-c', 'Enter');
    const after = await shows(/^after-ctrl-c$/m);
    expect(after).not.toMatch(/^slept$/m);

    // The detach key leaves; the sandbox runs on.
    tmux('send-keys', '-t', session, 'C-p', 'C-q');
    await shows(/\[detached: the sandbox runs on\]/);
    await shows(/^\[exit 0\]$/m);
    const view = JSON.parse(cliAs(gw.home, ['sandbox', 'get', 'box', '-o', 'json']).stdout) as {
      state: string;
    };
    expect(view.state).toBe('running');
  });
});
