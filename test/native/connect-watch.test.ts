/**
 * The connect watch (--event-fd): PID 1 sees each connect() of the sandbox through a seccomp
 * listener, reports on the event fd the ones the sandbox refuses (Landlock: a TCP port that is
 * neither the relay's nor a --bind-port; the network namespace: any address but loopback), and
 * lets every call go on to the kernel, which decides as it would have without the watch.
 */
import { describe, expect, it } from 'vitest';
import type { Readable } from 'node:stream';
import {
  events,
  FIRST_EXTRA_FD,
  python,
  runSandbox,
  startSandbox,
  USUAL_PATHS,
  type SandboxResult,
} from './harness.js';

const EACCES = 13;
const ENETUNREACH = 101;
const ECONNREFUSED = 111;

/** Runs python `code` (with `attempt(name, fn)`) with the watch on; returns what it printed and the result. */
async function watched(
  code: string,
  init: string[] = [],
): Promise<{ out: Record<string, unknown>; r: SandboxResult }> {
  const r = await runSandbox({
    events: true,
    init: [...USUAL_PATHS, '--bind-port', '8000', ...init],
    command: python(
      [
        'import json, os, socket, threading',
        'out = {}',
        'def attempt(name, fn):',
        '    try:',
        '        fn(); out[name] = "ok"',
        '    except OSError as e:',
        '        out[name] = e.errno',
        code,
        'print(json.dumps(out))',
      ].join('\n'),
    ),
  });
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  return { out: JSON.parse(r.stdout) as Record<string, unknown>, r };
}

describe('the connect watch', () => {
  it('reports a refused TCP connect to an unlisted loopback port, and the kernel still answers EACCES', async () => {
    const { out, r } = await watched(
      'attempt("unlisted", lambda: socket.create_connection(("127.0.0.1", 8001), timeout=5))\n' +
        'attempt("unlisted6", lambda: socket.create_connection(("::1", 9), timeout=5))\n' +
        'out["pid"] = os.getpid()',
    );
    expect(out).toMatchObject({ unlisted: EACCES, unlisted6: EACCES });
    expect(events(r, 'connect_watch')).toEqual([{ event: 'connect_watch', enabled: true }]);
    expect(r.eventLines).toEqual([
      {
        event: 'connect',
        pid: out.pid,
        binary: expect.stringMatching(/^\/usr\/bin\/python3/),
        protocol: 'tcp',
        family: 'ipv4',
        address: '127.0.0.1',
        port: 8001,
        refused_by: 'landlock',
      },
      {
        event: 'connect',
        pid: out.pid,
        binary: expect.stringMatching(/^\/usr\/bin\/python3/),
        protocol: 'tcp',
        family: 'ipv6',
        address: '::1',
        port: 9,
        refused_by: 'landlock',
      },
    ]);
  });

  it('reads an IPv6 address given without its scope id (24 bytes, as the kernel accepts)', async () => {
    const code = `
import ctypes, struct
libc = ctypes.CDLL(None, use_errno=True)
s = socket.socket(socket.AF_INET6)
address = struct.pack("<H", socket.AF_INET6) + struct.pack(">H", 8004) + bytes(4) + socket.inet_pton(socket.AF_INET6, "::1")
out["rc"] = libc.connect(s.fileno(), address, len(address))
out["errno"] = ctypes.get_errno()
out["length"] = len(address)`;
    const { out, r } = await watched(code);
    expect(out).toEqual({ rc: -1, errno: EACCES, length: 24 });
    expect(r.eventLines.map((e) => [e.address, e.port, e.refused_by])).toEqual([['::1', 8004, 'landlock']]);
  });

  it('reports connects to any other address (no route), TCP on the relay port and UDP alike', async () => {
    const { out, r } = await watched(
      // TEST-NET addresses: never routed anywhere, and the namespace has no route at all.
      'attempt("tcp", lambda: socket.create_connection(("192.0.2.1", 3128), timeout=5))\n' +
        'attempt("udp", lambda: socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).connect(("2001:db8::1", 53)))',
    );
    expect(out).toEqual({ tcp: ENETUNREACH, udp: ENETUNREACH });
    expect(r.eventLines.map((e) => [e.protocol, e.address, e.port, e.refused_by])).toEqual([
      ['tcp', '192.0.2.1', 3128, 'network'],
      ['udp', '2001:db8::1', 53, 'network'],
    ]);
  });

  it('says nothing of what the sandbox allows: the relay port, a listed port, loopback UDP, unix sockets', async () => {
    const code = `
server = socket.socket()
server.bind(("127.0.0.1", 8000))
server.listen()
threading.Thread(target=lambda: server.accept()[0].sendall(b"hi"), daemon=True).start()
out["own_server"] = socket.create_connection(("127.0.0.1", 8000), timeout=5).recv(2).decode()
attempt("relay_port", lambda: socket.create_connection(("127.0.0.1", 3128), timeout=5))
attempt("udp_loopback", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).connect(("127.0.0.1", 53)))
attempt("unix", lambda: socket.socket(socket.AF_UNIX).connect("/nonexistent"))
`;
    const { out, r } = await watched(code);
    // No relay runs here: the relay port's connect reaches the kernel, which finds no listener.
    expect(out).toEqual({ own_server: 'hi', relay_port: ECONNREFUSED, udp_loopback: 'ok', unix: 2 });
    expect(r.eventLines).toEqual([]);
  });

  it('watches every process of the sandbox, threads and children included', async () => {
    const code = `
import subprocess
t = threading.Thread(target=lambda: attempt("thread", lambda: socket.create_connection(("127.0.0.1", 8002), timeout=5)))
t.start(); t.join()
out["child"] = subprocess.run(["python3", "-c", "import socket\\ntry: socket.create_connection(('127.0.0.1', 8003))\\nexcept OSError as e: print(e.errno)"], capture_output=True, text=True).stdout.strip()
`;
    const { out, r } = await watched(code);
    expect(out).toEqual({ thread: EACCES, child: String(EACCES) });
    expect(r.eventLines.map((e) => e.port)).toEqual([8002, 8003]);
    // The thread's event names its thread id, the child's its own pid: two different callers.
    expect(new Set(r.eventLines.map((e) => e.pid)).size).toBe(2);
  });

  it('without Landlock network rules (ABI 3), reports only what has no route', async () => {
    const { out, r } = await watched(
      'attempt("loopback", lambda: socket.create_connection(("127.0.0.1", 8001), timeout=5))\n' +
        'attempt("outside", lambda: socket.create_connection(("192.0.2.1", 80), timeout=5))',
      ['--landlock-abi-max', '3'],
    );
    expect(out).toEqual({ loopback: ECONNREFUSED, outside: ENETUNREACH });
    expect(r.eventLines.map((e) => [e.address, e.refused_by])).toEqual([['192.0.2.1', 'network']]);
  });

  it('without --event-fd, installs nothing and reports nothing', async () => {
    const r = await runSandbox({ init: USUAL_PATHS, command: ['true'] });
    expect(events(r, 'connect_watch')).toEqual([]);
    expect(r.code).toBe(0);
  });
});

describe('the connect watch when the host reads slowly', () => {
  it('holds the caller until its line is written, drops none, and PID 1 keeps serving meanwhile', async () => {
    const COUNT = 3000; // ~500 KiB of lines: more than the event socket's buffer holds
    const sandbox = startSandbox({
      events: true,
      init: USUAL_PATHS,
      command: python(
        [
          'import signal, socket',
          'signal.signal(signal.SIGUSR2, lambda *a: print("usr2", flush=True))',
          'print("started", flush=True)',
          `for i in range(${COUNT}):`,
          '    try: socket.create_connection(("127.0.0.1", 8001))',
          '    except OSError: pass',
          'print("done", flush=True)',
        ].join('\n'),
      ),
    });
    let stdout = '';
    sandbox.child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
    const eventStream = (sandbox.child.stdio as unknown as Readable[])[FIRST_EXTRA_FD]!;
    eventStream.pause();
    await sandbox.waitForStdout('started');
    // Time for the agent to fill the event socket; not a measurement: whatever the machine's
    // speed, the agent cannot print "done" before the host reads (that would be a dropped line).
    await new Promise((r) => setTimeout(r, 1000));
    expect(stdout).not.toContain('done');
    // PID 1 is not stuck on the event fd: it still forwards a signal to the agent.
    process.kill(await sandbox.initPid, 'SIGUSR2');
    await sandbox.waitForStdout('usr2');
    expect(stdout).not.toContain('done');
    eventStream.resume();
    const r = await sandbox.result;
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('started\nusr2\ndone\n');
    // The signal interrupted one held connect, which Python then made again: one line more.
    expect(r.eventLines.length).toBeGreaterThanOrEqual(COUNT);
    expect(r.eventLines.length).toBeLessThanOrEqual(COUNT + 1);
    expect(new Set(r.eventLines.map((e) => e.port))).toEqual(new Set([8001]));
  });
});
