/**
 * The init's control socket (--control-dir-fd), driven by the library's client as a gateway
 * drives it: exec (pipes and pty), connect, events, status, signal, and what PID 1 leaves behind
 * (exit.json, events.jsonl, no fd and no zombie). Run against the release build and the ASan +
 * UBSan build (vitest.config.ts).
 */
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { connectControl } from '../../src/sandbox/control/control-common.js';
import { FRAME } from '../../src/sandbox/control/control-exec.js';
import { type ControlEvent, type ExecProcess } from '../../src/sandbox/control/control.js';
import { collect, startControlled, type ControlledSandbox } from './control-harness.js';
import { USUAL_PATHS, python } from './harness.js';

let running: ControlledSandbox | undefined;
afterEach(async () => {
  if (running && running.sandbox.child.exitCode === null) {
    running.sandbox.child.kill('SIGKILL');
    await running.sandbox.result.catch(() => undefined);
  }
  running = undefined;
});

/** A sandbox whose agent waits (sleeps) until the test ends it. */
async function idle(init: string[] = [], extra: { log?: boolean } = {}): Promise<ControlledSandbox> {
  running = await startControlled({
    init: [...USUAL_PATHS, ...init],
    command: ['sleep', '600'],
    stdin: null,
    ...extra,
  });
  return running;
}

async function run(p: ExecProcess): Promise<{ stdout: string; stderr: string; code: number }> {
  const [stdout, stderr, code] = await Promise.all([collect(p.stdout), collect(p.stderr), p.exited]);
  return { stdout, stderr, code };
}

/** Everything a process writes, from the start; and a wait for a text to have come. */
function capture(p: ExecProcess) {
  let text = '';
  const waiters: { text: string; resolve: () => void }[] = [];
  p.stdout.on('data', (d: Buffer) => {
    text += d.toString();
    for (const w of waiters.filter((w) => text.includes(w.text))) {
      waiters.splice(waiters.indexOf(w), 1);
      w.resolve();
    }
  });
  const ended = new Promise<void>((resolve) => p.stdout.on('end', resolve));
  return {
    waitFor: (wanted: string) =>
      text.includes(wanted)
        ? Promise.resolve()
        : new Promise<void>((resolve) => waiters.push({ text: wanted, resolve })),
    all: async () => {
      await ended;
      return text;
    },
  };
}

/** Resolves once `text` has come out of the process's stdout. */
function waitFor(p: ExecProcess, text: string): Promise<void> {
  return capture(p).waitFor(text);
}

/**
 * A process that writes "hup" to `file` when SIGHUP comes (python: a shell would also print
 * "Hangup" for its killed child, and die of SIGPIPE on the pipe closed meanwhile).
 */
function hupRecorder(file: string): string[] {
  return python(
    [
      'import signal, sys, time',
      'def hup(*_):',
      `    open(${JSON.stringify(file)}, "w").write("hup\\n"); sys.exit(0)`,
      'signal.signal(signal.SIGHUP, hup)',
      'print("ready", flush=True)',
      'while True: time.sleep(0.05)',
    ].join('\n'),
  );
}

/** Runs `argv` until it succeeds (a condition the sandbox reaches on its own time); its stdout. */
async function eventually(c: ControlledSandbox, argv: string[]): Promise<string> {
  for (;;) {
    const r = await run(c.control.exec({ argv }));
    if (r.code === 0) return r.stdout;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/**
 * PID 1's fds and children once it is at rest. The client has its answer (an EXIT frame, a status
 * line) just before PID 1 closes that connection, and an exec'd process's connect listener goes in
 * the round after its reaping: PID 1 is at rest when two looks, a status round trip apart, agree.
 */
async function pid1AtRest(c: ControlledSandbox): Promise<{ fds: string[]; children: string[] }> {
  const fds = () =>
    readdirSync(`/proc/${c.initPid}/fd`).map((fd) => {
      try {
        return `${fd}:${readlinkSync(`/proc/${c.initPid}/fd/${fd}`)}`;
      } catch {
        return `${fd}:gone`;
      }
    });
  // Every process whose parent is PID 1 (zombies included), from the host's /proc.
  const children = () =>
    readdirSync('/proc')
      .filter((e) => /^\d+$/.test(e))
      .filter((pid) => {
        try {
          return (
            readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')[1] === String(c.initPid)
          );
        } catch {
          return false; // gone meanwhile
        }
      });
  let last = JSON.stringify({ fds: fds(), children: children() });
  for (;;) {
    await c.control.status();
    await new Promise((resolve) => setTimeout(resolve, 20));
    const now = JSON.stringify({ fds: fds(), children: children() });
    if (now === last) return JSON.parse(now) as { fds: string[]; children: string[] };
    last = now;
  }
}

describe('the control socket: exec', () => {
  it('runs a command with pipes: stdout, stderr, stdin to its end, and its exit code', async () => {
    const c = await idle();
    const p = c.control.exec({ argv: ['sh', '-c', 'echo out; echo err >&2; cat; exit 3'] });
    p.stdin.end('from stdin\n');
    expect(await run(p)).toEqual({ stdout: 'out\nfrom stdin\n', stderr: 'err\n', code: 3 });
  });

  it('carries 8 MiB through stdin and back intact, at the pace of the process', async () => {
    const c = await idle();
    const p = c.control.exec({ argv: ['sh', '-c', 'cat | sha256sum'] });
    const data = Buffer.alloc(8 * 1024 * 1024);
    for (let i = 0; i < data.length; i++) data[i] = (i * 7919) % 251;
    p.stdin.end(data);
    const { createHash } = await import('node:crypto');
    const r = await run(p);
    expect(r.code).toBe(0);
    expect(r.stdout.split(' ')[0]).toBe(createHash('sha256').update(data).digest('hex'));
  });

  it('answers 127 for a command not found and 126 for one that cannot run, with the reason', async () => {
    const c = await idle();
    const missing = c.control.exec({ argv: ['no-such-command'] });
    expect(await missing.exited).toBe(127);
    expect(missing.failure).toBe(
      'carapace-init: exec: no-such-command (searched PATH=/usr/bin:/bin): No such file or directory',
    );
    await run(
      c.control.exec({
        argv: ['sh', '-c', 'echo echo hi > /tmp/plain; cp /tmp/plain /tmp/script; chmod +x /tmp/script'],
      }),
    );
    const notExecutable = c.control.exec({ argv: ['/tmp/plain'] });
    expect(await notExecutable.exited).toBe(126);
    expect(notExecutable.failure).toBe('carapace-init: exec: /tmp/plain: Permission denied');
    // No #! line: no /bin/sh fallback, as for the agent.
    const noInterpreter = c.control.exec({ argv: ['/tmp/script'] });
    expect(await noInterpreter.exited).toBe(126);
    expect(noInterpreter.failure).toBe('carapace-init: exec: /tmp/script: Exec format error');
    const ok = c.control.exec({ argv: ['true'] });
    expect(await ok.exited).toBe(0);
    expect(ok.failure).toBeNull();
  });

  it("gives the agent's environment with the request's added, and the working directory asked for", async () => {
    const c = await idle();
    const r = await run(
      c.control.exec({
        argv: ['sh', '-c', 'echo "$PATH|$EXTRA|$(pwd)"'],
        env: { EXTRA: 'x y' },
        cwd: '/tmp',
      }),
    );
    expect(r).toEqual({ stdout: '/usr/bin:/bin|x y|/tmp\n', stderr: '', code: 0 });
    const replaced = await run(c.control.exec({ argv: ['sh', '-c', 'echo $PATH'], env: { PATH: '/bin' } }));
    expect(replaced.stdout).toBe('/bin\n');
    const bad = c.control.exec({ argv: ['pwd'], cwd: '/no/such/dir' });
    expect(await bad.exited).toBe(125);
    expect(bad.failure).toBe('carapace-init: exec: chdir /no/such/dir: No such file or directory');
  });

  it('delivers SIGNAL frames to the process group', async () => {
    const c = await idle();
    const p = c.control.exec({ argv: ['sh', '-c', 'echo ready; sleep 600 & wait'] });
    await waitFor(p, 'ready');
    p.signal('SIGTERM');
    expect(await p.exited).toBe(143);
  });

  it('hangs up the process group when the client goes away', async () => {
    const c = await idle();
    const p = c.control.exec({ argv: hupRecorder('/tmp/hup') });
    await waitFor(p, 'ready');
    p.close();
    await expect(p.exited).rejects.toMatchObject({ code: 'CONTROL_CLOSED' });
    expect(await eventually(c, ['cat', '/tmp/hup'])).toBe('hup\n');
  });

  it('refuses an exec beyond 64 at once with an ERROR, and serves again once one ends', async () => {
    const c = await idle();
    const held = Array.from({ length: 64 }, () =>
      c.control.exec({ argv: ['sh', '-c', 'echo up; exec sleep 600'] }),
    );
    await Promise.all(held.map((p) => waitFor(p, 'up')));
    const refused = c.control.exec({ argv: ['true'] });
    await expect(refused.exited).rejects.toMatchObject({
      code: 'EXEC_REFUSED',
      message: 'carapace-init: exec: 64 execs are running, the most at once: wait for one to end',
    });
    held[0]!.signal('SIGKILL');
    expect(await held[0]!.exited).toBe(137);
    expect(await c.control.exec({ argv: ['true'] }).exited).toBe(0);
    for (const p of held.slice(1)) p.close();
  });

  it('keeps at most 64 ended execs whose clients never close, and still serves', async () => {
    const c = await idle();
    const before = (await pid1AtRest(c)).fds.length;
    // Raw clients that read their EXIT frame and then never close: the init holds each until the
    // client closes (so the EXIT is not lost to a reset) but not without bound.
    const ended = async () => {
      const socket = connectControl(c.control.socketPath);
      socket.write(`${JSON.stringify({ op: 'exec', argv: ['true'] })}\n`);
      let got = Buffer.alloc(0);
      const exited = await new Promise<boolean>((resolve) => {
        socket.on('data', (d: Buffer) => {
          got = Buffer.concat([got, d]);
          if (got.includes(Buffer.from([FRAME.EXIT, 0, 0, 0, 4]))) resolve(true);
        });
        socket.on('close', () => resolve(false)); // refused: an ERROR frame, then the close
      });
      return { socket, exited };
    };
    const open = [];
    for (let i = 0; i < 100; i++) open.push(await ended());
    expect(open.filter((o) => !o.exited)).toEqual([]);
    // Serves: an exec is not refused for the ended ones.
    expect(await run(c.control.exec({ argv: ['echo', 'still'] }))).toEqual({
      stdout: 'still\n',
      stderr: '',
      code: 0,
    });
    // At most 64 kept (a connection each): the older ones were closed by the init.
    expect((await pid1AtRest(c)).fds.length - before).toBeLessThanOrEqual(64);
    for (const o of open) o.socket.destroy();
  });

  it('leaves no fd and no zombie in PID 1 after 100 execs', async () => {
    const c = await idle();
    const settled = () => pid1AtRest(c);
    const before = await settled();
    expect(before.children).toHaveLength(1); // the agent
    for (let i = 0; i < 100; i++) {
      const p = c.control.exec({ argv: ['sh', '-c', 'echo $$; cat >/dev/null'], tty: i % 2 === 1 });
      p.stdin.end('x\n');
      const r = await run(p);
      expect(r.code).toBe(0);
    }
    expect(await settled()).toEqual(before);
  });

  it('refuses a bad request with an ERROR naming the field', async () => {
    const c = await idle();
    await expect(c.control.exec({ argv: ['true'], cols: 0, tty: true }).exited).rejects.toMatchObject({
      code: 'EXEC_REFUSED',
      message: 'carapace-init: exec: bad request: "cols" must be from 1 to 65535, got 0',
    });
  });
});

describe('the control socket: exec with a tty', () => {
  it('gives the process a terminal: isatty, the size asked for, then the size a RESIZE sets', async () => {
    const c = await idle();
    const p = c.control.exec({
      argv: ['sh', '-c', 'test -t 0 && test -t 1 && echo tty; stty size; read x; stty size'],
      tty: true,
      cols: 100,
      rows: 30,
    });
    const out = capture(p);
    await out.waitFor('30 100');
    p.resize(132, 43);
    p.stdin.write('go\n');
    expect(await p.exited).toBe(0);
    expect(await collect(p.stderr)).toBe('');
    // The terminal echoes what was typed, and ends lines with CR LF.
    expect(await out.all()).toBe('tty\r\n30 100\r\ngo\r\n43 132\r\n');
  });

  it('turns Ctrl-C into SIGINT for the foreground process group (the line discipline)', async () => {
    const c = await idle();
    const p = c.control.exec({ argv: ['sh', '-c', 'echo ready; exec sleep 600'], tty: true });
    await waitFor(p, 'ready');
    p.stdin.write('\x03');
    expect(await p.exited).toBe(130);
  });

  it('hangs the terminal up when the client goes away', async () => {
    const c = await idle();
    const p = c.control.exec({ argv: hupRecorder('/tmp/tty-hup'), tty: true });
    await waitFor(p, 'ready');
    p.close();
    expect(await eventually(c, ['cat', '/tmp/tty-hup'])).toBe('hup\n');
  });

  it("end of stdin is the terminal's EOF character", async () => {
    const c = await idle();
    const p = c.control.exec({ argv: ['sh', '-c', 'stty -echo; echo ready; cat; echo done'], tty: true });
    const out = capture(p);
    await out.waitFor('ready');
    // As typed at a terminal: ^D ends the input at the start of a line.
    p.stdin.end('line\n');
    expect(await p.exited).toBe(0);
    expect(await out.all()).toBe('ready\r\nline\r\ndone\r\n');
  });
});

describe('the control socket: connect', () => {
  const ECHO = python(
    [
      'import socket, threading',
      'def listen(family, host):',
      '    s = socket.socket(family); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)',
      '    s.bind((host, 8000)); s.listen(); return s',
      'def serve(s):',
      '    while True:',
      '        c, _ = s.accept()',
      '        data = b""',
      '        while chunk := c.recv(65536): data += chunk',
      '        c.sendall(b"echo:" + data); c.close()',
      'v4, v6 = listen(socket.AF_INET, "127.0.0.1"), listen(socket.AF_INET6, "::1")',
      'threading.Thread(target=serve, args=(v6,), daemon=True).start()',
      'print("listening", flush=True)',
      'serve(v4)',
    ].join('\n'),
  );

  it('relays a connection to a listener inside, both ways with half-close, over IPv4 and IPv6', async () => {
    running = await startControlled({
      init: [...USUAL_PATHS, '--bind-port', '8000'],
      command: ECHO,
      stdin: null,
    });
    await running.sandbox.waitForStdout('listening');
    for (const family of [4, 6] as const) {
      const socket = await running.control.connect(8000, family);
      socket.end(`hello over IPv${family}`);
      expect(await collect(socket)).toBe(`echo:hello over IPv${family}`);
    }
  });

  it('answers ECONNREFUSED for a port nobody listens on, and the relay goes on serving', async () => {
    running = await startControlled({
      init: [...USUAL_PATHS, '--bind-port', '8000'],
      command: ECHO,
      stdin: null,
    });
    await running.sandbox.waitForStdout('listening');
    await expect(running.control.connect(8001)).rejects.toMatchObject({
      code: 'CONTROL_REFUSED',
      errno: 111,
      message: 'connect to 127.0.0.1:8001: Connection refused',
    });
    const socket = await running.control.connect(8000);
    socket.end('again');
    expect(await collect(socket)).toBe('echo:again');
  });
});

describe('the control socket: events, status, signal, the end', () => {
  const CONNECT_THEN_WAIT = python(
    [
      'import socket, sys',
      'try: socket.create_connection(("127.0.0.1", 8001))',
      'except OSError as e: print(e.errno, flush=True)',
      'sys.stdin.read()',
    ].join('\n'),
  );

  it('streams refused connects with a sequence number, then the exit; exit.json records the status', async () => {
    running = await startControlled({ init: USUAL_PATHS, command: CONNECT_THEN_WAIT, stdin: null });
    await running.sandbox.waitForStdout('13');
    const seen: ControlEvent[] = [];
    const stream = running.control.events();
    const done = (async () => {
      for await (const e of stream) seen.push(e);
    })();
    // An exec'd process is watched as the agent is.
    await run(
      running.control.exec({
        argv: python('import socket\ntry: socket.create_connection(("127.0.0.1", 9))\nexcept OSError: pass'),
      }),
    );
    expect(await running.control.status()).toMatchObject({ agentPid: 2, running: true, exit: null });
    await running.control.signal('SIGTERM');
    await done;
    const r = await running.sandbox.result;
    expect(r.code).toBe(143);
    expect(seen).toEqual([
      expect.objectContaining({ seq: 1, event: 'connect', port: 8001, refused_by: 'landlock', pid: 2 }),
      expect.objectContaining({ seq: 2, event: 'connect', port: 9, refused_by: 'landlock' }),
      { seq: 3, event: 'exit', code: 143 },
    ]);
    const record = JSON.parse(readFileSync(join(running.dir, 'exit.json'), 'utf8')) as {
      code: number;
      t: number;
    };
    expect(record.code).toBe(143);
    expect(Math.abs(record.t - Date.now())).toBeLessThan(600_000);
    expect(existsSync(join(running.dir, 'events.jsonl'))).toBe(false); // everything was acknowledged
  });

  it('replays to the next subscriber what the last one did not acknowledge', async () => {
    running = await startControlled({ init: USUAL_PATHS, command: CONNECT_THEN_WAIT, stdin: null });
    await running.sandbox.waitForStdout('13');
    const first = running.control.events()[Symbol.asyncIterator]();
    expect((await first.next()).value).toMatchObject({ seq: 1, port: 8001 });
    // Gone without asking for the next one: seq 1 was never acknowledged.
    running.sandbox.child.stdin?.end();
    const second: ControlEvent[] = [];
    for await (const e of running.control.events()) second.push(e);
    expect(second).toEqual([
      expect.objectContaining({ seq: 1, port: 8001 }),
      { seq: 2, event: 'exit', code: 0 },
    ]);
  });

  it('keeps what no subscriber took in events.jsonl beside exit.json', async () => {
    running = await startControlled({ init: USUAL_PATHS, command: CONNECT_THEN_WAIT, stdin: null });
    await running.sandbox.waitForStdout('13');
    running.sandbox.child.stdin?.end();
    expect((await running.sandbox.result).code).toBe(0);
    const lines = readFileSync(join(running.dir, 'events.jsonl'), 'utf8').trim().split('\n');
    expect(lines.map((l) => JSON.parse(l) as ControlEvent)).toEqual([
      expect.objectContaining({ seq: 1, event: 'connect', port: 8001 }),
      { seq: 2, event: 'exit', code: 0 },
    ]);
    expect(JSON.parse(readFileSync(join(running.dir, 'exit.json'), 'utf8'))).toMatchObject({ code: 0 });
  });

  it('with no subscriber, holds the caller once 1024 lines wait; a subscriber gets them all, none dropped', async () => {
    const COUNT = 1100;
    running = await startControlled({
      init: USUAL_PATHS,
      command: python(
        [
          'import socket',
          `for i in range(${COUNT}):`,
          '    try: socket.create_connection(("127.0.0.1", 8001))',
          '    except OSError: pass',
          'print("done", flush=True)',
          'import sys; sys.stdin.read()',
        ].join('\n'),
      ),
      stdin: null,
    });
    // Not a measurement: whatever the machine's speed, "done" before a subscriber would be a drop.
    await new Promise((resolve) => setTimeout(resolve, 1500));
    expect(await running.control.status()).toMatchObject({ running: true });
    let stdout = '';
    running.sandbox.child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
    expect(stdout).toBe('');
    const seqs: number[] = [];
    for await (const e of running.control.events()) {
      seqs.push(e.seq);
      if (seqs.length === COUNT) break;
    }
    expect(seqs).toEqual(Array.from({ length: COUNT }, (_, i) => i + 1));
    await running.sandbox.waitForStdout('done');
  });

  it('status and signal answer for the agent; signal refuses a number that is no signal', async () => {
    const c = await idle();
    const status = await c.control.status();
    expect(status).toMatchObject({ agentPid: 2, running: true, exit: null });
    await expect(c.control.signal(65)).rejects.toMatchObject({ code: 'BAD_REQUEST' });
    await c.control.signal('SIGKILL');
    expect((await c.sandbox.result).code).toBe(137);
  });

  it('answers a malformed request with {"ok":false} and one line naming what is wrong', async () => {
    const c = await idle();
    const { connect } = await import('node:net');
    const ask = (line: string) =>
      new Promise<string>((resolve) => {
        const s = connect(join(c.dir, 'control.sock'));
        let text = '';
        s.on('data', (d) => (text += d.toString()));
        s.on('close', () => resolve(text));
        s.end(line);
      });
    expect(JSON.parse(await ask('{"op":"reboot"}\n'))).toEqual({
      ok: false,
      errno: 22,
      message:
        'bad request: unknown op "reboot" (exec, connect, events, status, signal or log): Invalid argument',
    });
    expect(JSON.parse(await ask('{"op":"status","x":1}\n'))).toMatchObject({
      message: 'bad request: op "status" has no field "x": Invalid argument',
    });
    expect(JSON.parse(await ask('{"op":"connect","port":70000}\n'))).toMatchObject({
      message: 'bad request: "port" must be from 1 to 65535, got 70000: Invalid argument',
    });
    expect(JSON.parse(await ask('{"op":"exec","argv":["a\\u0000b"]}\n'))).toMatchObject({
      message: expect.stringContaining('NUL (\\u0000) cannot be passed in a string'),
    });
    expect(JSON.parse(await ask('not json\n'))).toMatchObject({ ok: false, errno: 22 });
    // And the socket serves on.
    expect(await c.control.status()).toMatchObject({ running: true });
  });
});

describe('the control socket: hostile request lines', () => {
  it('answers 1,500 mutated request lines each with a refusal or its op, and serves on', async () => {
    const c = await idle();
    const before = await pid1AtRest(c);
    const { connect } = await import('node:net');
    const templates = [
      '{"op":"status"}',
      '{"op":"exec","argv":["true","\\u00e9\\ud83d\\ude00"],"env":["A=b"],"cwd":"/tmp","tty":false,"cols":80,"rows":24}',
      '{"op":"connect","port":9,"family":6}',
      '{"op":"events","ack":true}',
    ];
    // A fixed seed: input n is the same in every run, and a failure names it.
    let seed = 0x2545f491;
    const random = (n: number) => {
      seed ^= seed << 13;
      seed ^= seed >>> 17;
      seed ^= seed << 5;
      return (seed >>> 0) % n;
    };
    const pieces = [
      '{',
      '}',
      '[',
      ']',
      '"',
      '\\',
      ':',
      ',',
      '\\u',
      'd800',
      '\\udc00',
      'null',
      '-0',
      '1e9',
      '\u00ff',
      '\xff',
    ];
    const mutate = (text: string): string => {
      let t = text;
      for (let k = 0, n = 1 + random(4); k < n; k++) {
        const at = random(t.length + 1);
        switch (random(4)) {
          case 0:
            t = t.slice(0, at) + t.slice(at + 1 + random(8));
            break;
          case 1:
            t = t.slice(0, at) + pieces[random(pieces.length)]! + t.slice(at);
            break;
          case 2:
            t = t.slice(0, at) + String.fromCharCode(random(256)) + t.slice(at + 1);
            break;
          default:
            t = t + t.slice(at);
        }
      }
      return t.replace(/\n/g, '');
    };
    const ask = (line: string) =>
      new Promise<string>((resolve) => {
        const socket = connect(join(c.dir, 'control.sock'));
        let got = Buffer.alloc(0);
        socket.on('data', (d: Buffer) => {
          got = Buffer.concat([got, d]);
          socket.destroy(); // an answer came: enough (an exec's process is hung up)
        });
        socket.on('error', () => undefined);
        socket.on('close', () => resolve(got.toString('latin1')));
        // A valid events request waits for an event: no answer is an answer too. (A hung init
        // would be caught by the status at the end.)
        setTimeout(() => socket.destroy(), 2000).unref();
        socket.write(Buffer.from(`${line}\n`, 'latin1'));
      });
    for (let i = 0; i < 1500; i++) {
      const line = mutate(templates[i % templates.length]!);
      if (line.includes('signal')) continue; // a mutation that signals the agent is not an attack
      const answer = await ask(line);
      // Events and a running exec may answer nothing before the client hangs up; anything else
      // answered is a JSON refusal, a JSON answer, or a frame.
      if (
        answer !== '' &&
        !answer.startsWith('{') &&
        ![0x11, 0x12, 0x13, 0x14].includes(answer.charCodeAt(0))
      )
        throw new Error(`input ${i} (${JSON.stringify(line)}): answer ${JSON.stringify(answer)}`);
    }
    // Half a line, then the client's end: the connection is not kept waiting for the rest.
    for (let i = 0; i < 20; i++) {
      await new Promise<void>((resolve) => {
        const socket = connect(join(c.dir, 'control.sock'));
        socket.on('error', () => undefined); // reset: PID 1 closed with the half line unread
        socket.on('close', () => resolve());
        socket.end(i % 2 ? '{"op":"sta' : '');
      });
    }
    expect(await c.control.status()).toMatchObject({ running: true });
    expect(c.sandbox.child.exitCode).toBeNull();
    expect(await pid1AtRest(c)).toEqual(before);
  });
});

describe('--log-fd', () => {
  it("logs the agent's stdout and stderr as JSON lines, in order, tagged, invalid UTF-8 as base64", async () => {
    running = await startControlled({
      init: USUAL_PATHS,
      log: true,
      command: python(
        [
          'import os, sys, time',
          'def wait(n):',
          '    while not os.path.exists(f"/tmp/go{n}"): time.sleep(0.02)',
          'sys.stdout.write("one\\n"); sys.stdout.flush(); wait(1)',
          'sys.stderr.write("two é\\n"); sys.stderr.flush(); wait(2)',
          'os.write(1, b"\\xff\\xfe bytes"); wait(3)',
          'os.write(1, b"x" * 40000); wait(4)',
          'os.write(1, "é".encode()[:1]); os.write(1, "é".encode()[1:] + b"!"); wait(5)',
          'print("stdin:", repr(sys.stdin.read()), flush=True)',
        ].join('\n'),
      ),
    });
    const c = running;
    const lines = () => c.logLines().filter((l) => l.s !== 'init');
    const xs = () => lines().reduce((n, l) => n + (l.d?.startsWith('x') ? l.d.length : 0), 0);
    const waitLog = async (ready: () => boolean) => {
      while (!ready()) await new Promise((resolve) => setTimeout(resolve, 20));
    };
    const go = (n: number) => run(c.control.exec({ argv: ['touch', `/tmp/go${n}`] }));
    await waitLog(() => lines().length >= 1);
    await go(1);
    await waitLog(() => lines().length >= 2);
    await go(2);
    await waitLog(() => lines().length >= 3);
    await go(3);
    await waitLog(() => xs() >= 40000);
    await go(4);
    // A character cut between two writes arrives whole (the reads may or may not join them).
    await go(5);
    expect((await c.sandbox.result).code).toBe(0);
    const all = lines();
    expect(all[0]).toMatchObject({ s: 'out', d: 'one\n' });
    expect(all[1]).toMatchObject({ s: 'err', d: 'two é\n' });
    expect(all[2]).toMatchObject({ s: 'out', b: Buffer.from('\xff\xfe bytes', 'latin1').toString('base64') });
    const big = all.slice(3).filter((l) => l.d?.startsWith('x'));
    expect(big.map((l) => l.d!.length).reduce((a, b) => a + b, 0)).toBe(40000);
    expect(big.every((l) => l.d!.length <= 16 * 1024)).toBe(true);
    const rest = all.slice(3 + big.length).map((l) => l.d ?? `<b64:${l.b}>`);
    expect(rest.join('')).toBe("é!stdin: ''\n"); // stdin is /dev/null
    expect(all.every((l) => typeof l.t === 'number' && Math.abs(l.t - Date.now()) < 600_000)).toBe(true);
  });

  it('refuses a --log-fd that is not a file opened for appending', async () => {
    const { openSync, constants } = await import('node:fs');
    const { sandboxOwnedDir, runSandbox, FIRST_EXTRA_FD } = await import('./harness.js');
    const fd = openSync(join(sandboxOwnedDir(), 'x.log'), constants.O_WRONLY | constants.O_CREAT, 0o600);
    const r = await runSandbox({
      init: [...USUAL_PATHS, '--log-fd', String(FIRST_EXTRA_FD)],
      fds: [fd],
      command: ['true'],
    });
    expect(r.code).toBe(125);
    expect(r.stderr).toBe(
      `carapace-init: logs: --log-fd ${FIRST_EXTRA_FD} must be a regular file opened for appending (O_WRONLY|O_APPEND)\n`,
    );
  });
});

describe('the control socket cannot be reached from inside', () => {
  it('not by path, not through /proc/1/fd, not by searching; exec’d processes hold fds 0-2 only', async () => {
    const c = await idle();
    const probe = (extraPath: string) =>
      python(
        [
          'import errno, json, os, socket, stat',
          'out = {}',
          `for path in (${JSON.stringify(join(c.dir, 'control.sock'))}, ${JSON.stringify(extraPath)}):`,
          '    try:',
          '        socket.socket(socket.AF_UNIX).connect(path); out[path] = "connected"',
          '    except OSError as e:',
          '        out[path] = errno.errorcode[e.errno]',
          'try: out["fd_list"] = os.listdir("/proc/1/fd")',
          'except OSError as e: out["fd_list"] = errno.errorcode[e.errno]',
          'found = []',
          'for root, dirs, files in os.walk("/", onerror=lambda e: None):',
          '    if root == "/" and "proc" in dirs: dirs.remove("proc")',
          '    for f in files:',
          '        try:',
          '            if stat.S_ISSOCK(os.lstat(os.path.join(root, f)).st_mode): found.append(os.path.join(root, f))',
          '        except OSError: pass',
          'out["sockets"] = found',
          'out["fds"] = sorted(int(f) for f in os.listdir("/proc/self/fd"))',
          'print(json.dumps(out))',
        ].join('\n'),
      );
    // The fd number the init holds the directory by (the harness's first extra fd).
    const dirFd = readdirSync(`/proc/${c.initPid}/fd`).find((fd) => {
      try {
        return readlinkSync(`/proc/${c.initPid}/fd/${fd}`) === c.dir;
      } catch {
        return false;
      }
    });
    expect(dirFd).toBeDefined();
    const viaPid1 = `/proc/1/fd/${dirFd}/control.sock`;
    const r = await run(c.control.exec({ argv: probe(viaPid1) }));
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout)).toEqual({
      [join(c.dir, 'control.sock')]: 'ENOENT', // the directory is not mounted inside
      [viaPid1]: 'EACCES', // PID 1 holds the directory fd, and is not dumpable
      fd_list: 'EACCES',
      sockets: [],
      fds: [0, 1, 2, 3], // stdio, and the listing's own fd
    });
  });
});
