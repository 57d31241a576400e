/**
 * Operator in the loop, part 3: `carapace term` in a real pseudo-terminal (tmux, 80×24), against a
 * real gateway whose sandbox's agent makes real requests. Keys are sent as a person types them and
 * the screen is read back (capture-pane): the sandbox is listed, a new denial appears live as a
 * decision and as a pending proposal, `a` approves it and the same request then passes, `q` quits.
 * The screen it reads is saved as docs/screenshots/term.txt by `npm run screenshots` only: a test
 * run leaves the tree as it found it (the screen has the time, ports and uptime of its run).
 */
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, REPO } from '../helpers/cli.js';
import { requestScene } from '../helpers/gateway-agent.js';
import { cliAs, type TestGateway } from '../helpers/gateway.js';
import { holds } from '../helpers/premises.js';
import type { Upstreams } from '../proxy/harness.js';

const socket = `carapace-term-${process.pid}`;
const session = 'term';
const tmux = (...args: string[]) => spawnSync('tmux', ['-L', socket, ...args], { encoding: 'utf8' });
const screen = () => tmux('capture-pane', '-p', '-t', session).stdout;

/** The screen once it matches (the view redraws as events arrive); the last screen in the error. */
async function shows(pattern: RegExp): Promise<string> {
  let last = '';
  for (let i = 0; i < 300; i++) {
    last = screen();
    if (pattern.test(last)) return last;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`the screen never showed ${pattern}:\n${last}`);
}

describe.skipIf(!holds('root', 'tmux'))('carapace term, in a terminal at 80×24', () => {
  let gw: TestGateway;
  let up: Upstreams;
  let ask: (url: string) => Promise<string>;
  let url: (host: string) => string;
  let suggest: (host: string, rationale: string) => Promise<string>;

  beforeAll(async () => {
    ({ gw, up, ask, url, suggest } = await requestScene());
    // CI=true as in a CI runner's shell: ink would then draw only its last frame, at exit, unless
    // the view insists on the terminal it has checked it has.
    const env = `CARAPACE_HOME=${gw.home} TERM=xterm-256color CI=true`;
    const command = `env ${env} ${process.execPath} ${CLI} term`;
    // A session that outlives the tests' own: a tmux server exits with its last session, and a
    // test's new-session racing that exit (the one before quit its term) failed in CI.
    expect(tmux('new-session', '-d', '-s', 'keep', 'sleep 3600').status).toBe(0);
    expect(tmux('new-session', '-d', '-s', session, '-x', '80', '-y', '24', command).status).toBe(0);
  });
  afterAll(async () => {
    tmux('kill-server');
    await gw?.stop();
    await up?.close();
  });

  it('lists the sandbox, shows a new denial live, approves it with a key, and quits', async () => {
    await shows(/Carapace term · 1 sandbox · 0 pending · live/);
    const first = await shows(/^web\s+running\s+\S+\s+0\s+/m);
    expect(first).toContain('PROPOSALS (0)');
    expect(first).toMatch(/^NAME\s+STATE\s+UPTIME\s+RESTARTS\s+CPU\s+MEM\s+CONNS\s+POLICY$/m);
    // CPU is the difference of two readings of /metrics (the second comes after a second); memory
    // is the resident size of the agent's processes.
    await shows(/^web\s+running\s+\S+\s+0\s+\d+%\s+\d+(\.\d)?[KMG]\s+0\s+rev 1/m);

    expect(await ask(url('a.test'))).toBe('200');
    await shows(/web\s+allow\s+connect a\.test/);
    expect(await ask(url('b.test'))).toBe('403');
    const denied = await shows(/> #\d+\s+web\s+connect b\.test:\d+ ×1/);
    expect(denied).toMatch(/web\s+DENIED connect b\.test/);
    expect(denied).toContain('1 pending');
    // Every line fits 80 columns, and the whole view 24 rows.
    const lines = denied.split('\n');
    expect(lines.length).toBeLessThanOrEqual(25);
    for (const l of lines) expect(l.length).toBeLessThanOrEqual(80);
    if (process.env.CARAPACE_SCREENSHOTS === '1')
      writeFileSync(join(REPO, 'docs', 'screenshots', 'term.txt'), denied.replace(/\s+$/gm, ''));

    tmux('send-keys', '-t', session, 'a');
    await shows(/approved: policy revision 2 applied/);
    await shows(/PROPOSALS \(0\)/);
    expect(await ask(url('b.test'))).toBe('200');

    tmux('send-keys', '-t', session, 'l');
    await shows(/LOG \(l closes\)/);
    tmux('send-keys', '-t', session, 'q');
    for (let i = 0; i < 100 && tmux('has-session', '-t', session).status === 0; i++)
      await new Promise((r) => setTimeout(r, 50));
    expect(tmux('has-session', '-t', session).status).not.toBe(0);
  });

  it('keeps the selection on the proposal on screen while new denials arrive, shows its rule, and a approves that one', async () => {
    const second = 'term-selection';
    const env = `CARAPACE_HOME=${gw.home} TERM=xterm-256color`;
    const command = `env ${env} ${process.execPath} ${CLI} term`;
    expect(tmux('new-session', '-d', '-s', second, '-x', '80', '-y', '24', command).status).toBe(0);
    const on = async (pattern: RegExp) => {
      for (let i = 0; i < 300; i++) {
        const s = tmux('capture-pane', '-p', '-t', second).stdout;
        if (pattern.test(s)) return s;
        await new Promise((r) => setTimeout(r, 50));
      }
      throw new Error(
        `the screen never showed ${pattern}:\n${tmux('capture-pane', '-p', '-t', second).stdout}`,
      );
    };
    await on(/· live/);
    expect(await ask(url('c.test'))).toBe('403');
    await on(/> #\d+\s+web\s+connect c\.test/);
    expect(await ask(url('d.test'))).toBe('403');
    // The newest is listed first; the selection stays where it was.
    await on(/#\d+\s+web\s+connect d\.test[^\n]*\n> #\d+\s+web\s+connect c\.test/);
    tmux('send-keys', '-t', second, 'Up');
    await on(/> #\d+\s+web\s+connect d\.test/);
    tmux('send-keys', '-t', second, 'Down');
    const chosen = await on(/> #\d+\s+web\s+connect c\.test/);
    const id = /> #(\d+)/.exec(chosen)![1];
    // What `a` would write, before it is pressed.
    expect(chosen).toMatch(/^ {2}rule: allow \S*python\S* to connect to c\.test:\d+$/m);

    // A new denial is listed on top, and another proposal is hit again (and moves up): the
    // selection stays on c.test.
    expect(await ask(url('e.test'))).toBe('403');
    await on(/#\d+\s+web\s+connect e\.test/);
    expect(await ask(url('d.test'))).toBe('403');
    const moved = await on(/connect d\.test:\d+ ×2/);
    expect(moved).toMatch(new RegExp(`> #${id}\\s+web\\s+connect c\\.test`));

    tmux('send-keys', '-t', second, 'a');
    await on(new RegExp(`#${id} approved: policy revision \\d+`));
    // (c.test resolves nowhere here, so the history, not a request, shows what was approved.)
    const decided = JSON.parse(cliAs(gw.home, ['rules', 'history', 'web', '-o', 'json']).stdout) as {
      id: number;
      host: string;
      status: string;
    }[];
    expect(decided.find((p) => p.id === Number(id))).toMatchObject({ host: 'c.test', status: 'approved' });
    const left = JSON.parse(cliAs(gw.home, ['rules', 'list', 'web', '-o', 'json']).stdout) as {
      host: string;
    }[];
    expect(left.map((p) => p.host).sort()).toEqual(['d.test', 'e.test']);
    tmux('send-keys', '-t', second, 'q');
  });

  it("marks the agent's own suggestion (policy.local) as such, with its rationale under it", async () => {
    const third = 'term-origin';
    const env = `CARAPACE_HOME=${gw.home} TERM=xterm-256color`;
    const command = `env ${env} ${process.execPath} ${CLI} term`;
    expect(tmux('new-session', '-d', '-s', third, '-x', '80', '-y', '24', command).status).toBe(0);
    const on = async (pattern: RegExp) => {
      for (let i = 0; i < 300; i++) {
        const s = tmux('capture-pane', '-p', '-t', third).stdout;
        if (pattern.test(s)) return s;
        await new Promise((r) => setTimeout(r, 50));
      }
      throw new Error(
        `the screen never showed ${pattern}:\n${tmux('capture-pane', '-p', '-t', third).stdout}`,
      );
    };
    // The denials left by the test before (d.test, e.test) carry no mark.
    const before = await on(/> #\d+\s+web\s+connect [de]\.test/);
    expect(before).not.toContain('[agent]');
    expect(await suggest('f.test', 'the docs build fetches from f.test')).toMatch(/^201 /);
    await on(/ #\d+\s+web\s+\[agent\] connect f\.test:\d+ ×1/);
    tmux('send-keys', '-t', third, 'Up');
    const chosen = await on(/> #\d+\s+web\s+\[agent\] connect f\.test/);
    expect(chosen).toMatch(/^ {2}the agent says: the docs build fetches from f\.test$/m);
    expect(chosen).toMatch(/^ {2}rule: allow \S*python\S* to connect to f\.test:\d+$/m);
    for (const l of chosen.split('\n')) expect(l.length).toBeLessThanOrEqual(80);
    tmux('send-keys', '-t', third, 'q');
  });

  it('refuses to run without a terminal, in one line', () => {
    const r = spawnSync(process.execPath, [CLI, 'term'], {
      encoding: 'utf8',
      env: { ...process.env, CARAPACE_HOME: gw.home },
    });
    expect(r.status).toBe(2);
    expect(r.stderr).toBe(
      'carapace: carapace term needs a terminal; for scripts, use carapace rules list -o json\n',
    );
  });
});
