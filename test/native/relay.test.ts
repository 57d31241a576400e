/**
 * The relay: TCP on 127.0.0.1:3128 and [::1]:3128 inside the sandbox, to the host's Unix socket,
 * each connection prefixed with a PROXY v1 line that carries the client's address and port.
 */
import { createHash, randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { startHostProxy, readAll, type HostProxy, type RelayedConnection } from './host-proxy.js';
import {
  events,
  FIRST_EXTRA_FD,
  runSandbox,
  sandboxOwnedDir,
  startSandbox,
  USUAL_PATHS,
  workDir,
  type SandboxResult,
} from './harness.js';
import { closeSync, constants, openSync, readFileSync } from 'node:fs';

const RELAY = ['--relay-dir-fd', String(FIRST_EXTRA_FD)];

let proxy: HostProxy | undefined;
afterEach(async () => {
  await proxy?.close();
  proxy = undefined;
});

/** Runs python `script` (saved as /w/client.py) in a sandbox whose relay goes to `proxy`. */
function runClient(host: HostProxy, script: string, init: string[] = []): Promise<SandboxResult> {
  return runSandbox({
    init: [...USUAL_PATHS, '--ro', '/w', ...RELAY, ...init],
    fds: [host.dirFd],
    work: workDir({ 'client.py': script }),
    command: ['python3', '/w/client.py'],
  });
}

/** Echoes "<header>|<everything received>" once the client half-closes, then closes. */
function echoHeader(c: RelayedConnection): void {
  void readAll(c).then((data) => c.socket.end(`${c.header}|${data.toString()}`));
}

describe('relay', () => {
  it("carries bytes both ways, after a PROXY line with the client's address, port and socket (IPv4 and IPv6)", async () => {
    proxy = await startHostProxy(echoHeader);
    const script = `
import json, os, socket
out = []
for family, host in ((socket.AF_INET, '127.0.0.1'), (socket.AF_INET6, '::1')):
    s = socket.socket(family)
    s.connect((host, 3128))
    s.sendall(b'hello from ' + host.encode())
    s.shutdown(socket.SHUT_WR)
    reply = b''
    while chunk := s.recv(65536):
        reply += chunk
    out.append({'port': s.getsockname()[1], 'inode': os.fstat(s.fileno()).st_ino, 'reply': reply.decode()})
print(json.dumps(out))
`;
    const r = await runClient(proxy, script);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const [v4, v6] = JSON.parse(r.stdout) as { port: number; inode: number; reply: string }[];
    // The last field is the inode of the client's own socket, as fstat shows it to the client.
    expect(v4?.inode).toBeGreaterThan(0);
    expect(v4?.reply).toBe(
      `PROXY TCP4 127.0.0.1 127.0.0.1 ${v4?.port} 3128 ${v4?.inode}|hello from 127.0.0.1`,
    );
    expect(v6?.reply).toBe(`PROXY TCP6 ::1 ::1 ${v6?.port} 3128 ${v6?.inode}|hello from ::1`);
    expect(events(r, 'relay')).toEqual([
      {
        event: 'relay',
        enabled: true,
        port: 3128,
        socket: 'proxy.sock',
        ipv4: true,
        ipv6: true,
        socket_inodes: true,
      },
    ]);
  });

  it('serves curl as an HTTP proxy', async () => {
    const requests: string[] = [];
    proxy = await startHostProxy((c) => {
      let head = c.rest.toString();
      const answer = (): void => {
        if (!head.includes('\r\n\r\n')) return;
        requests.push(head.split('\r\n')[0] ?? '');
        c.socket.end('HTTP/1.1 200 OK\r\nContent-Length: 13\r\nConnection: close\r\n\r\nfrom the host');
      };
      c.socket.on('data', (d: Buffer) => {
        head += d.toString();
        answer();
      });
      answer();
    });
    const r = await runSandbox({
      init: [...USUAL_PATHS, ...RELAY],
      fds: [proxy.dirFd],
      command: [
        'sh',
        '-c',
        'curl -sS -x http://127.0.0.1:3128 http://example.test/a && curl -sS -x http://[::1]:3128 http://example.test/b',
      ],
    });
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('from the hostfrom the host');
    expect(requests).toEqual(['GET http://example.test/a HTTP/1.1', 'GET http://example.test/b HTTP/1.1']);
    expect(proxy.headers[0]).toMatch(/^PROXY TCP4 127\.0\.0\.1 127\.0\.0\.1 \d+ 3128 [1-9]\d*$/);
    expect(proxy.headers[1]).toMatch(/^PROXY TCP6 ::1 ::1 \d+ 3128 [1-9]\d*$/);
  });

  it('moves 64 MiB each way intact', async () => {
    const size = 64 * 1024 * 1024;
    const block = randomBytes(1024 * 1024);
    const download = createHash('sha256');
    for (let i = 0; i < 64; i++) download.update(block);
    const downloadHash = download.digest('hex');
    let uploadHash = '';
    proxy = await startHostProxy((c) => {
      const hash = createHash('sha256').update(c.rest);
      let count = c.rest.length;
      c.socket.on('data', (d: Buffer) => {
        hash.update(d);
        count += d.length;
      });
      c.socket.on('end', () => {
        uploadHash = hash.digest('hex');
        c.socket.write(`${count} ${uploadHash}\n`);
        const send = (i: number): void => {
          for (; i < 64; i++) {
            if (!c.socket.write(block)) {
              c.socket.once('drain', () => send(i + 1));
              return;
            }
          }
          c.socket.end();
        };
        send(0);
      });
    });
    const script = `
import hashlib, json, os, socket, time
block = os.urandom(1024 * 1024)
sent = hashlib.sha256()
s = socket.create_connection(('127.0.0.1', 3128))
started = time.monotonic()
for _ in range(64):
    s.sendall(block)
    sent.update(block)
s.shutdown(socket.SHUT_WR)
data = bytearray()
while chunk := s.recv(1 << 20):
    data += chunk
elapsed = time.monotonic() - started
line, rest = bytes(data).split(b'\\n', 1)
print(json.dumps({'sent': sent.hexdigest(), 'host_saw': line.decode(), 'received': len(rest),
                  'received_hash': hashlib.sha256(rest).hexdigest(), 'seconds': elapsed}))
`;
    const r = await runClient(proxy, script);
    expect(r.stderr).toBe('');
    const out = JSON.parse(r.stdout) as {
      sent: string;
      host_saw: string;
      received: number;
      received_hash: string;
      seconds: number;
    };
    expect(out.host_saw).toBe(`${size} ${out.sent}`);
    expect(out.received).toBe(size);
    expect(out.received_hash).toBe(downloadHash);
    console.log(
      `relay: 64 MiB up + 64 MiB down in ${out.seconds.toFixed(2)} s (${(128 / out.seconds) | 0} MiB/s, python client)`,
    );
  });

  it('propagates a half-close from the host: the client reads EOF and can still send', async () => {
    let hostReceived: Promise<Buffer> = Promise.resolve(Buffer.alloc(0));
    proxy = await startHostProxy((c) => {
      c.socket.end('host says bye\n'); // half-close: the host still reads
      hostReceived = readAll(c);
    });
    const script = `
import socket
s = socket.create_connection(('127.0.0.1', 3128))
got = b''
while chunk := s.recv(4096):
    got += chunk
print(got.decode(), end='')
s.sendall(b'client still talking')
s.shutdown(socket.SHUT_WR)
s.recv(1)
s.close()
`;
    const r = await runClient(proxy, script);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('host says bye\n');
    expect((await hostReceived).toString()).toBe('client still talking');
  });

  it('does not stall when both directions are saturated at once (full duplex)', async () => {
    proxy = await startHostProxy((c) => {
      c.socket.write(c.rest);
      c.socket.pipe(c.socket); // echo as it arrives, ending when the client ends
    });
    const script = `
import hashlib, socket, threading
block = bytes(range(256)) * 4096  # 1 MiB
s = socket.create_connection(('127.0.0.1', 3128))
received = hashlib.sha256()
count = 0
def read():
    global count
    while chunk := s.recv(1 << 20):
        received.update(chunk)
        count += len(chunk)
reader = threading.Thread(target=read)
reader.start()
sent = hashlib.sha256()
for _ in range(64):
    s.sendall(block)
    sent.update(block)
s.shutdown(socket.SHUT_WR)
reader.join()
print(count, received.hexdigest() == sent.hexdigest())
`;
    const r = await runClient(proxy, script);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe(`${64 * 1024 * 1024} True\n`);
  });

  it('does not spin on idle half-closed connections', async () => {
    const held: RelayedConnection[] = [];
    proxy = await startHostProxy((c) => {
      held.push(c);
      let seen = c.rest.toString();
      const check = (): void => {
        if (seen === 'host ends') c.socket.end();
      };
      c.socket.on('data', (d: Buffer) => {
        seen += d.toString();
        check();
      });
      check();
    });
    const script = `
import socket, time
a = socket.create_connection(('127.0.0.1', 3128))
a.sendall(b'client ends')
a.shutdown(socket.SHUT_WR)               # client half-closed, host silent
b = socket.create_connection(('127.0.0.1', 3128))
b.sendall(b'host ends')
assert b.recv(10) == b''                  # host half-closed, client silent
c = socket.create_connection(('127.0.0.1', 3128))
c.sendall(b'x')
c.close()                                 # client gone, host silent
print('idle', flush=True)
time.sleep(1.5)
print('done', flush=True)
time.sleep(0.5)
`;
    const sandbox = startSandbox({
      init: [...USUAL_PATHS, '--ro', '/w', ...RELAY],
      fds: [proxy.dirFd],
      work: workDir({ 'client.py': script }),
      command: ['python3', '/w/client.py'],
    });
    const pid = await sandbox.initPid;
    await sandbox.waitForStdout('idle');
    const before = cpuTicks(pid);
    await sandbox.waitForStdout('done');
    const spent = cpuTicks(pid) - before;
    const r = await sandbox.result;
    expect(r.stderr).toBe('');
    expect(held).toHaveLength(3);
    // A busy loop would burn ~150 ticks in 1.5 s; an idle PID 1 burns none.
    expect(spent).toBeLessThan(15);
  });

  it('serves many connections at once, each with its own header', async () => {
    proxy = await startHostProxy(echoHeader);
    const script = `
import json, os, socket
sockets = [socket.create_connection(('127.0.0.1', 3128)) for _ in range(100)]
for i, s in enumerate(sockets):
    s.sendall(f'connection {i}'.encode())
    s.shutdown(socket.SHUT_WR)
good = 0
for i, s in enumerate(sockets):
    reply = b''
    while chunk := s.recv(4096):
        reply += chunk
    inode = os.fstat(s.fileno()).st_ino
    if reply.decode() == f'PROXY TCP4 127.0.0.1 127.0.0.1 {s.getsockname()[1]} 3128 {inode}|connection {i}':
        good += 1
print(good)
`;
    const r = await runClient(proxy, script);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('100\n');
  });

  it('pauses accepting when PID 1 runs out of fds, and resumes as connections close', async () => {
    // With 64 fds PID 1 holds about nine relayed connections (six fds each), and the client has
    // forty waiting to be accepted. The host answers none until PID 1 has said it paused, so it
    // must run out whatever the timing (releasing after the first few let a slow PID 1 see them
    // closed before it reached for the tenth, and never run out).
    let release: () => void = () => {};
    const gate = new Promise<void>((resolve) => (release = resolve));
    proxy = await startHostProxy((c) => {
      const data = readAll(c);
      void gate.then(() => data).then((d) => c.socket.end(`${c.header}|${d.toString()}`));
    });
    const script = `
import socket
sockets = [socket.create_connection(('127.0.0.1', 3128)) for _ in range(40)]
for i, s in enumerate(sockets):
    s.sendall(f'connection {i}'.encode())
    s.shutdown(socket.SHUT_WR)
good = 0
for i, s in enumerate(sockets):
    reply = b''
    while chunk := s.recv(4096):
        reply += chunk
    good += reply.decode().endswith(f'|connection {i}')
print(good)
`;
    const sandbox = startSandbox({
      init: [...USUAL_PATHS, '--ro', '/w', ...RELAY],
      fds: [proxy.dirFd],
      work: workDir({ 'client.py': script }),
      command: ['python3', '/w/client.py'],
      nofileLimit: 64,
    });
    let said = '';
    sandbox.child.stderr?.on('data', (d: Buffer) => {
      said += d.toString();
      if (said.includes('(pausing until a connection closes)')) release();
    });
    const r = await sandbox.result;
    expect(r.stdout).toBe('40\n');
    // Each pause is said once on stderr, and nothing else went wrong.
    const lines = r.stderr.trim().split('\n');
    expect(lines.length).toBeGreaterThan(0);
    for (const line of lines) {
      expect(line).toMatch(
        /^carapace-init: relay: (prepare a connection|accept) \(pausing until a connection closes\): Too many open files$/,
      );
    }
  });

  it('survives a host that drops a connection, and serves the next one', async () => {
    proxy = await startHostProxy((c) => {
      if (proxy?.headers.length === 1)
        c.socket.destroy(); // the first connection
      else echoHeader(c);
    });
    const script = `
import socket, time
s = socket.create_connection(('127.0.0.1', 3128))
s.sendall(b'drop me')
try:
    print('first:', s.recv(100))
except ConnectionResetError:
    print('first: reset')
s = socket.create_connection(('127.0.0.1', 3128))
s.sendall(b'second')
s.shutdown(socket.SHUT_WR)
print('second:', s.recv(200).decode().split('|')[1])
`;
    const r = await runClient(proxy, script);
    expect(r.stdout).toMatch(/^first: (b''|reset)\nsecond: second\n$/);
  });

  it("keeps the host socket out of the agent's reach", async () => {
    proxy = await startHostProxy(echoHeader);
    const script = `
import json, os, socket
out = {}
for path in (${JSON.stringify(`${'HOST_PATH'}`)}, '/proc/1/fd/5/proxy.sock', '/proc/self/fd/5/proxy.sock'):
    try:
        socket.socket(socket.AF_UNIX).connect(path)
        out[path] = 'connected'
    except OSError as e:
        out[path] = e.errno
try:
    socket.socket().bind(('127.0.0.1', 3128))
    out['bind_3128'] = 'ok'
except OSError as e:
    out['bind_3128'] = e.errno
print(json.dumps(out))
`.replace('HOST_PATH', proxy.path);
    const r = await runClient(proxy, script);
    expect(JSON.parse(r.stdout)).toEqual({
      [proxy.path]: 2, // ENOENT: the directory is not mounted in the sandbox
      '/proc/1/fd/5/proxy.sock': 13, // EACCES: PID 1 is not dumpable
      '/proc/self/fd/5/proxy.sock': 2, // the agent does not hold the fd
      bind_3128: 13, // EACCES: Landlock allows no bind there (and the relay holds it)
    });
  });

  it('refuses to start when the host socket is missing', async () => {
    const empty = sandboxOwnedDir();
    const fd = openSync(empty, constants.O_RDONLY | constants.O_DIRECTORY);
    try {
      const r = await runSandbox({ init: [...USUAL_PATHS, ...RELAY], fds: [fd], command: ['true'] });
      expect(r.code).toBe(125);
      expect(r.stderr).toBe(
        'carapace-init: relay: the host socket /proc/self/fd/5/proxy.sock: No such file or directory\n',
      );
      expect(events(r, 'error')).toMatchObject([{ step: 'relay', errno: 2 }]);
    } finally {
      closeSync(fd);
    }
  });

  it('listens on --relay-port and lets the agent connect there only', async () => {
    proxy = await startHostProxy(echoHeader);
    const script = `
import socket
s = socket.create_connection(('127.0.0.1', 4000))
s.shutdown(socket.SHUT_WR)
print(s.recv(200).decode())
try:
    socket.create_connection(('127.0.0.1', 3128))
except OSError as e:
    print(e.errno)
`;
    const r = await runClient(proxy, script, ['--relay-port', '4000']);
    expect(r.stdout).toMatch(/^PROXY TCP4 127\.0\.0\.1 127\.0\.0\.1 \d+ 4000 [1-9]\d*\|\n13\n$/);
  });
});

/** utime + stime of a host process, in clock ticks. */
function cpuTicks(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
  return Number(fields[11]) + Number(fields[12]);
}
