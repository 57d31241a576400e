/**
 * The agent's log file's size and its hand-over (native/logs.c, the control socket's `log` op),
 * driven as a gateway drives them (gateway/sandboxes/agent-log.ts): --log-limit keeps one file to
 * its limit however fast the agent writes, the init asks for a new file with a `log` event, the
 * `log` op switches to the descriptor sent with it between two lines, and the first line of the
 * new file counts what was dropped meanwhile. What the op refuses (no fd, two, one that is not a
 * file open for appending, an fd sent with another op) leaves the log where it was and no fd behind.
 * Run against the release build and the ASan + UBSan build (vitest.config.ts).
 */
import { spawnSync } from 'node:child_process';
import {
  closeSync,
  constants,
  openSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  renameSync,
  statSync,
  unlinkSync,
} from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { type ControlEvent, type ControlLogEvent } from '../../src/sandbox/control/control.js';
import { startControlled, type ControlledSandbox, type LogLine } from './control-harness.js';
import { USUAL_PATHS, python } from './harness.js';

const MiB = 1024 * 1024;

let running: ControlledSandbox | undefined;
afterEach(async () => {
  if (running && running.sandbox.child.exitCode === null) {
    running.sandbox.child.kill('SIGKILL');
    await running.sandbox.result.catch(() => undefined);
  }
  running = undefined;
});

/** An agent that writes `lines` lines of `width` x's (and a newline) at once, then one line per /tmp/goN. */
function writer(lines: number, width: number): string[] {
  return python(
    [
      'import os, time',
      `line = b"x" * ${width} + b"\\n"`,
      `for i in range(${lines}): os.write(1, line)`,
      'open("/tmp/wrote", "w").close()',
      'n = 1',
      'while True:',
      '    while not os.path.exists(f"/tmp/go{n}"): time.sleep(0.02)',
      '    os.write(1, f"after {n}\\n".encode()); n += 1',
    ].join('\n'),
  );
}

const parse = (file: string): LogLine[] => {
  const text = readFileSync(file, 'utf8');
  // Whole lines only: one may be being written. (Not a /[^\n]*$/ replace: quadratic in a line's
  // length, and a record holds up to 16 KiB.)
  return text
    .slice(0, text.lastIndexOf('\n') + 1)
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as LogLine & { dropped?: number });
};

/** The agent's bytes a log file holds (its out lines' text). */
const agentBytes = (lines: LogLine[]) =>
  lines.filter((l) => l.s === 'out').reduce((n, l) => n + Buffer.byteLength(l.d ?? ''), 0);

async function until(ready: () => boolean | Promise<boolean>): Promise<void> {
  while (!(await ready())) await new Promise((r) => setTimeout(r, 20));
}

async function exists(c: ControlledSandbox, path: string): Promise<boolean> {
  return (await c.control.exec({ argv: ['test', '-e', path] }).exited) === 0;
}

async function go(c: ControlledSandbox, n: number): Promise<void> {
  await c.control.exec({ argv: ['touch', `/tmp/go${n}`] }).exited;
}

const identity = (file: string) => {
  const st = statSync(file, { bigint: true });
  return `${st.dev}:${st.ino}`;
};

/** `line` with `fds` attached (SCM_RIGHTS), from a host python: Node cannot send descriptors. */
function sendWithFds(socket: string, line: string, fds: number[]): Record<string, unknown> {
  const r = spawnSync(
    '/usr/bin/python3',
    [
      '-c',
      [
        'import socket, sys',
        's = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])',
        'fds = [int(x) for x in sys.argv[3:]]',
        'socket.send_fds(s, [sys.argv[2].encode() + b"\\n"], fds) if fds else s.sendall(sys.argv[2].encode() + b"\\n")',
        'sys.stdout.write(s.makefile("rb").readline().decode())',
      ].join('\n'),
      socket,
      line,
      ...fds.map((_, i) => String(3 + i)),
    ],
    { stdio: ['ignore', 'pipe', 'pipe', ...fds], encoding: 'utf8' },
  );
  if (r.status !== 0) throw new Error(r.stderr);
  // exec answers with a frame (type, length, text): its text is what matters here.
  if (!r.stdout.startsWith('{')) return { frame: r.stdout.charCodeAt(0), text: r.stdout.slice(5) };
  return JSON.parse(r.stdout) as Record<string, unknown>;
}

/** The events that come, as they come. */
function listen(c: ControlledSandbox): { got: ControlEvent[]; stop: () => void } {
  const events = c.control.events();
  const got: ControlEvent[] = [];
  void (async () => {
    try {
      for await (const e of events) got.push(e);
    } catch {
      // the sandbox ended
    }
  })();
  return { got, stop: () => events.close() };
}

/** PID 1's open fds, once two looks a status round trip apart agree. */
async function initFds(c: ControlledSandbox): Promise<string[]> {
  const look = () =>
    readdirSync(`/proc/${c.initPid}/fd`).map((fd) => {
      try {
        return `${fd}:${readlinkSync(`/proc/${c.initPid}/fd/${fd}`)}`;
      } catch {
        return `${fd}:gone`;
      }
    });
  let last = JSON.stringify(look());
  for (;;) {
    await c.control.status();
    await new Promise((r) => setTimeout(r, 20));
    const now = JSON.stringify(look());
    if (now === last) return JSON.parse(now) as string[];
    last = now;
  }
}

describe('--log-limit and the log op', () => {
  it('keeps the file to its limit under a writer faster than any host, asks for a new file, and counts what it dropped in the next one', async () => {
    // 3,000 lines of 1,001 bytes at once: three times the limit, before anyone can answer.
    running = await startControlled({
      init: [...USUAL_PATHS, '--log-limit', String(MiB)],
      log: true,
      command: writer(3000, 1000),
    });
    const c = running;
    const events = listen(c);
    const first = c.logFile!;
    await until(() => exists(c, '/tmp/wrote'));
    // Past half: asked; full: asked once more, with what it dropped so far. No more than that.
    await until(() => events.got.filter((e) => e.event === 'log').length >= 2);
    const asks = events.got.filter((e): e is ControlLogEvent => e.event === 'log');
    expect(asks).toHaveLength(2);
    expect(asks[0]).toMatchObject({ limit: MiB, file: identity(first), dropped: 0 });
    expect(asks[0]!.bytes).toBeGreaterThanOrEqual(MiB / 2);
    expect(asks[1]!.dropped).toBeGreaterThan(0);
    expect(statSync(first).size).toBeLessThanOrEqual(MiB);
    expect(statSync(first).size).toBeGreaterThan(MiB - 120 * 1024); // full but for less than a line

    // The gateway's part: the file renamed away, a new one handed over.
    renameSync(first, `${first}.1`);
    const fd = openSync(
      first,
      constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_EXCL,
      0o600,
    );
    await c.control.log(fd, 2 * MiB);
    closeSync(fd);
    await go(c, 1);
    await until(() => parse(first).some((l) => l.d === 'after 1\n'));

    const old = parse(`${first}.1`);
    const next = parse(first) as (LogLine & { dropped?: number })[];
    // Nothing torn: every line of both files parsed; the old one ends with the last whole line.
    expect(next[0]).toMatchObject({ s: 'init' });
    expect(next[0]!.d).toMatch(/^carapace-init: logs: \d+ bytes of output dropped/);
    // Every byte the agent wrote is either in the old file or counted as dropped.
    expect(agentBytes(old) + next[0]!.dropped!).toBe(3000 * 1001);
    expect(next[1]).toMatchObject({ s: 'out', d: 'after 1\n' });
    events.stop();
  });

  it('switches between two lines: what came before is in the old file, what came after in the new, each once', async () => {
    running = await startControlled({ init: USUAL_PATHS, log: true, command: writer(0, 0) });
    const c = running;
    const first = c.logFile!;
    await go(c, 1);
    await until(() => c.logLines().some((l) => l.d === 'after 1\n'));
    renameSync(first, `${first}.1`);
    await go(c, 2); // between the rename and the switch: the old file
    await until(() => parse(`${first}.1`).some((l) => l.d === 'after 2\n'));
    const fd = openSync(
      first,
      constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_EXCL,
      0o600,
    );
    await c.control.log(fd, 0);
    closeSync(fd);
    await go(c, 3);
    await until(() => c.logLines().some((l) => l.d === 'after 3\n'));
    expect(parse(`${first}.1`).map((l) => l.d)).toEqual(['after 1\n', 'after 2\n']);
    expect(c.logLines().map((l) => l.d)).toEqual(['after 3\n']); // nothing dropped: no count line
  });

  it('refuses no fd, two, a FIFO, a read-only file, a bad limit, and an fd sent with another op; the log stays where it was and no fd is left behind', async () => {
    running = await startControlled({ init: USUAL_PATHS, log: true, command: writer(0, 0) });
    const c = running;
    const socket = join(c.dir, 'control.sock');
    const before = await initFds(c);
    const other = join(c.dir, '..', 'other.log');
    const appending = () =>
      openSync(other, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT, 0o600);
    const fds: number[] = [];
    const keep = (fd: number) => (fds.push(fd), fd);

    expect(sendWithFds(socket, '{"op":"log"}', [])).toMatchObject({
      ok: false,
      errno: 22,
      message: expect.stringContaining(
        'log: expected one file descriptor with the request (SCM_RIGHTS), got none',
      ),
    });
    expect(sendWithFds(socket, '{"op":"log"}', [keep(appending()), keep(appending())])).toMatchObject({
      ok: false,
      message: expect.stringContaining('got more'),
    });
    const fifo = fifoFds();
    expect(sendWithFds(socket, '{"op":"log"}', [keep(fifo[1])])).toMatchObject({
      ok: false,
      errno: 22,
      message: expect.stringContaining('must be a regular file opened for appending'),
    });
    keep(fifo[0]);
    expect(sendWithFds(socket, '{"op":"log"}', [keep(openSync(other, constants.O_RDONLY))])).toMatchObject({
      ok: false,
      message: expect.stringContaining('must be a regular file opened for appending'),
    });
    expect(sendWithFds(socket, '{"op":"log","limit":5}', [keep(appending())])).toMatchObject({
      ok: false,
      message: expect.stringContaining('"limit" must be 0 (none) or from 1048576 to 1099511627776, got 5'),
    });
    expect(sendWithFds(socket, '{"op":"status"}', [keep(appending())])).toMatchObject({
      ok: false,
      message: 'bad request: op takes no file descriptor: Invalid argument',
    });
    expect(sendWithFds(socket, '{"op":"exec","argv":["true"]}', [keep(appending())])).toMatchObject({
      frame: 0x14,
      text: 'carapace-init: exec: bad request: op "exec" takes no file descriptor',
    });
    for (const fd of fds) closeSync(fd);

    await go(c, 1);
    await until(() => c.logLines().some((l) => l.d === 'after 1\n'));
    expect(readFileSync(other, 'utf8')).toBe('');
    expect(await initFds(c)).toEqual(before);
  });

  it('refuses the op in a sandbox without --log-fd', async () => {
    running = await startControlled({ init: USUAL_PATHS, command: ['sleep', '600'] });
    const file = join(running.dir, '..', 'unused.log');
    const fd = openSync(file, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT, 0o600);
    await expect(running.control.log(fd, 0)).rejects.toMatchObject({
      code: 'CONTROL_REFUSED',
      errno: 2,
      message: expect.stringContaining('this sandbox has no --log-fd'),
    });
    closeSync(fd);
  });

  it('refuses --log-limit without --log-fd, and one below 1 MiB', async () => {
    const { runSandbox } = await import('./harness.js');
    const alone = await runSandbox({ init: [...USUAL_PATHS, '--log-limit', String(MiB)], command: ['true'] });
    expect(alone.code).toBe(125);
    expect(alone.stderr).toBe('carapace-init: options: --log-limit needs --log-fd\n');
    const small = await runSandbox({ init: [...USUAL_PATHS, '--log-limit', '1000'], command: ['true'] });
    expect(small.code).toBe(125);
    expect(small.stderr).toContain('--log-limit: expected a number from 1048576 to 1099511627776');
  });
});

/** A FIFO's two ends (read, write): Node has no pipe(2), and a FIFO is no regular file either. */
function fifoFds(): [number, number] {
  const path = join('/tmp', `carapace-fifo-${process.pid}-${Date.now()}`);
  const made = spawnSync('mkfifo', [path]);
  if (made.status !== 0) throw new Error(String(made.stderr));
  const read = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  const write = openSync(path, constants.O_WRONLY | constants.O_NONBLOCK);
  unlinkSync(path);
  return [read, write];
}
