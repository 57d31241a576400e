/**
 * Issue 3 acceptance: each of these is refused inside `carapace run` with the default policy, and
 * the test asserts the errno or exit status the kernel gave.
 */
import { spawn } from 'node:child_process';
import { createSocket } from 'node:dgram';
import type { EventEmitter } from 'node:events';
import { createServer, Socket } from 'node:net';
import { chmodSync, linkSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { pySyscall, runInSandbox, sharedTempDir } from '../helpers/sandbox.js';

const X86_64 = process.arch === 'x64';
const NR = X86_64
  ? {
      ptrace: 101,
      process_vm_readv: 310,
      bpf: 321,
      io_uring_setup: 425,
      keyctl: 250,
      perf_event_open: 298,
      setns: 308,
    }
  : {
      ptrace: 117,
      process_vm_readv: 270,
      bpf: 280,
      io_uring_setup: 425,
      keyctl: 219,
      perf_event_open: 241,
      setns: 268,
    };

/** Resolves once `done()` holds, looked at after each `event` of `emitter` (its own listeners first). */
function arrived(emitter: EventEmitter, event: string, done: () => boolean): Promise<void> {
  return new Promise((resolve) => {
    const look = () => {
      if (!done()) return;
      emitter.off(event, look);
      resolve();
    };
    emitter.on(event, look);
  });
}

function errnoOf(body: string): string {
  const r = runInSandbox(pySyscall(body));
  expect(r.stderr).toBe('');
  expect(r.status).toBe(0);
  return r.stdout.trim();
}

describe('refused by the sandbox (default policy)', () => {
  const host = sharedTempDir();
  const secret = join(host, 'secret.txt');
  writeFileSync(secret, 'host secret\n');
  chmodSync(secret, 0o600);

  it('cannot read /etc/shadow', () => {
    const r = runInSandbox(['cat', '/etc/shadow']);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/Permission denied/);
  });

  it("cannot see a host path outside the allowlist (the test's own temp dir)", () => {
    expect(errnoOf(`attempt(lambda: open(${JSON.stringify(secret)}))`)).toBe('ENOENT');
    expect(errnoOf(`attempt(lambda: os.listdir(${JSON.stringify(host)}))`)).toBe('ENOENT');
  });

  it.each(['/usr/carapace-probe', '/etc/carapace-probe', '/usr/bin/carapace-probe'])(
    'cannot write %s',
    (path) => {
      const out = errnoOf(
        `attempt(lambda: os.open(${JSON.stringify(path)}, os.O_WRONLY | os.O_CREAT, 0o644))`,
      );
      expect(['EROFS', 'EACCES']).toContain(out);
    },
  );

  it('cannot reach a host file through a symlink or a hard link planted in the workspace', () => {
    const ws = sharedTempDir('carapace-ws-');
    symlinkSync(secret, join(ws, 'sym'));
    linkSync(secret, join(ws, 'hard'));
    const r = runInSandbox(
      pySyscall(
        'attempt(lambda: open("/sandbox/sym").read())\nattempt(lambda: open("/sandbox/hard").read())',
      ),
      ['--workspace', ws],
    );
    expect(r.stdout.trim().split('\n')).toEqual(['ENOENT', 'EACCES']);
  });

  it('cannot mount', () => {
    expect(errnoOf('report(libc.mount(b"none", b"/tmp", b"tmpfs", 0, None))')).toBe('EPERM');
  });

  it('cannot create a user namespace (unshare -U)', () => {
    const r = runInSandbox(['unshare', '-U', 'true']);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/Operation not permitted/);
  });

  it('cannot setns', () => {
    expect(
      errnoOf(`fd = os.open("/proc/self/ns/net", os.O_RDONLY)\nreport(libc.syscall(${NR.setns}, fd, 0))`),
    ).toBe('EPERM');
  });

  it('cannot ptrace a sibling', () => {
    const body = `pid = os.fork()\nif pid == 0:\n    import time; time.sleep(5); os._exit(0)\nreport(libc.syscall(${NR.ptrace}, 16, pid, 0, 0))\nos.kill(pid, 9)`;
    expect(errnoOf(body)).toBe('EPERM');
  });

  it.each([
    ['process_vm_readv', `report(libc.syscall(${NR.process_vm_readv}, os.getppid(), 0, 0, 0, 0, 0))`],
    ['bpf', `report(libc.syscall(${NR.bpf}, 0, 0, 0))`],
    ['io_uring_setup', `report(libc.syscall(${NR.io_uring_setup}, 1, 0))`],
    ['keyctl', `report(libc.syscall(${NR.keyctl}, 0, 0, 0, 0, 0))`],
    ['perf_event_open', `report(libc.syscall(${NR.perf_event_open}, 0, 0, -1, -1, 0))`],
  ])('cannot %s', (_name, body) => {
    expect(errnoOf(body)).toBe('EPERM');
  });

  it('cannot become root: uid 0 does not exist in the user namespace', () => {
    expect(errnoOf('report(libc.setuid(0))\nprint(os.getuid())')).toBe('EINVAL\n1000');
  });

  it.each([
    ['AF_PACKET', 'socket.AF_PACKET, socket.SOCK_RAW, 0'],
    ['AF_NETLINK (audit)', 'socket.AF_NETLINK, socket.SOCK_RAW, 9'],
    ['AF_NETLINK (uevent)', 'socket.AF_NETLINK, socket.SOCK_RAW, 15'],
  ])('cannot open %s sockets', (_name, args) => {
    expect(
      errnoOf(
        `report(libc.socket(${args.replace(/socket\.(\w+)/g, (_m, c: string) => `int(socket.${c})`)}))`,
      ),
    ).toBe('EPERM');
  });

  it('can still open a NETLINK_ROUTE socket (what libc needs for getaddrinfo)', () => {
    expect(errnoOf('report(libc.socket(int(socket.AF_NETLINK), int(socket.SOCK_RAW), 0))')).toBe('ok');
  });

  it('cannot signal a process outside the sandbox', () => {
    const outside = spawn('sleep', ['30']);
    try {
      expect(errnoOf(`report(libc.kill(${outside.pid}, 9))`)).toBe('ESRCH');
      expect(outside.exitCode).toBeNull();
    } finally {
      outside.kill();
    }
  });

  it('cannot connect over TCP to any address, nor send UDP out', async () => {
    // What reached the host, in the order it came: the peer's port of each connection, each datagram.
    const connections: number[] = [];
    const server = createServer((s) => {
      connections.push(s.remotePort ?? -1);
      s.destroy();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    const udp = createSocket('udp4');
    const datagrams: string[] = [];
    udp.on('message', (m) => datagrams.push(m.toString()));
    await new Promise<void>((r) => udp.bind(0, '127.0.0.1', r));
    const udpPort = udp.address().port;
    const sender = createSocket('udp4');
    const mine = new Socket();
    mine.on('error', () => {}); // the server hangs up at once
    try {
      const body = [
        `attempt(lambda: socket.create_connection(("127.0.0.1", ${port}), timeout=5))`,
        `attempt(lambda: socket.create_connection(("::1", ${port}), timeout=5))`,
        // An isolated network namespace: no route leaves it (192.0.2.0/24 is TEST-NET-1).
        `attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("192.0.2.1", 53)))`,
        `attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("127.0.0.1", ${udpPort})))`,
      ].join('\n');
      const lines = errnoOf(body).split('\n');
      expect(lines[0]).toBe('EACCES'); // Landlock: TCP connect only to the relay port
      expect(lines[1]).toBe('EACCES');
      expect(lines[2]).toBe('ENETUNREACH');
      // Inside, 127.0.0.1 is the sandbox's own loopback: the datagram may be sent, but never arrives here.
      expect(['ok', 'ECONNREFUSED']).toContain(lines[3]);
      // The host's own connection and datagram, made once the sandbox's attempts are over: the
      // kernel hands connections (the accept queue) and datagrams (the receive queue) over in the
      // order they came, so when the host's own have arrived, anything of the sandbox's had too.
      const ownConnection = arrived(server, 'connection', () => connections.includes(mine.localPort ?? -2));
      const ownDatagram = arrived(udp, 'message', () => datagrams.includes('host'));
      await new Promise<void>((r) => mine.connect(port, '127.0.0.1', r));
      sender.send('host', udpPort, '127.0.0.1');
      await Promise.all([ownConnection, ownDatagram]);
      expect(connections).toEqual([mine.localPort]);
      expect(datagrams).toEqual(['host']);
    } finally {
      mine.destroy();
      sender.close();
      server.close();
      udp.close();
    }
  });

  it('has no capability left', () => {
    const r = runInSandbox(['grep', '^Cap', '/proc/self/status']);
    expect(r.status).toBe(0);
    const caps = Object.fromEntries(
      r.stdout
        .trim()
        .split('\n')
        .map((l) => l.split(/:\s+/) as [string, string]),
    );
    for (const k of ['CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb'])
      expect(caps[k]).toBe('0000000000000000');
  });
});
