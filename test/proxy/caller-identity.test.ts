import { type ChildProcess, spawn } from 'node:child_process';
import {
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  realpathSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { BinaryTrust } from '../../src/proxy/identity/binary-trust.js';
import {
  type CallerQuery,
  ProcCallerResolver,
  findSocketInode,
} from '../../src/proxy/identity/caller-identity.js';
import { MERGED_USR_ROOT } from '../../src/sandbox/launch/bwrap-minimal.js';

const children: ChildProcess[] = [];
const servers: net.Server[] = [];
const accepted: net.Socket[] = [];
afterEach(() => {
  for (const c of children.splice(0)) {
    // Each child leads its own process group: forked grandchildren go with it.
    try {
      process.kill(-(c.pid as number), 'SIGKILL');
    } catch {
      // already gone
    }
  }
  for (const s of accepted.splice(0)) s.destroy();
  for (const s of servers.splice(0)) s.close();
});

/** A TCP server on loopback that holds every connection open and reports its peer port. */
async function holdingServer(host = '127.0.0.1'): Promise<{ port: number; next: () => Promise<net.Socket> }> {
  const queue: net.Socket[] = [];
  const waiters: ((s: net.Socket) => void)[] = [];
  const server = net.createServer((s) => {
    s.on('error', () => {});
    accepted.push(s);
    const w = waiters.shift();
    if (w) w(s);
    else queue.push(s);
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, host, r));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    next: () =>
      new Promise((resolve) => {
        const s = queue.shift();
        if (s) resolve(s);
        else waiters.push(resolve);
      }),
  };
}

function run(cmd: string, args: string[]): ChildProcess {
  const c = spawn(cmd, args, { stdio: 'ignore', detached: true });
  children.push(c);
  return c;
}

/** Like run, with stdout readable (for the child's own "ready" lines). */
function runReporting(cmd: string, args: string[]): ChildProcess {
  const c = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'ignore'], detached: true });
  children.push(c);
  return c;
}

/** Resolves when the child prints `text` on a line of its own. */
function line(c: ChildProcess, text: string): Promise<void> {
  return new Promise((resolve, reject) => {
    let out = '';
    c.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.split('\n').includes(text)) resolve();
    });
    c.once('exit', (code) => reject(new Error(`exited (${code}) before printing ${text}`)));
  });
}

function queryFor(sock: net.Socket, family: 4 | 6 = 4): CallerQuery {
  return {
    family,
    srcAddress: sock.remoteAddress as string,
    srcPort: sock.remotePort as number,
    dstAddress: sock.localAddress as string,
    dstPort: sock.localPort as number,
  };
}

const CURL = realpathSync('/usr/bin/curl');
const SH = realpathSync('/bin/sh');
const PYTHON = 'python3';

describe('ProcCallerResolver on host processes', () => {
  it('finds the binary and its ancestors of a real TCP client through /proc/<pid>/net/tcp', async () => {
    const srv = await holdingServer();
    run('/bin/sh', ['-c', `${CURL} -s http://127.0.0.1:${srv.port}/ ; sleep 0`]);
    const sock = await srv.next();
    const r = new ProcCallerResolver({ netPid: process.pid, rootPid: process.pid });
    const res = await r.resolve(queryFor(sock));
    expect(res.ok).toBe(true);
    if (!res.ok) return;
    expect(res.caller.binary).toBe(CURL);
    expect(res.caller.ancestors).toEqual([SH]);
  });

  it('resolves an IPv6 client through tcp6', async () => {
    const srv = await holdingServer('::1');
    run(CURL, ['-s', '-g', `http://[::1]:${srv.port}/`]);
    const sock = await srv.next();
    const res = await new ProcCallerResolver({ netPid: process.pid }).resolve(queryFor(sock, 6));
    expect(res.ok && res.caller.binary).toBe(CURL);
  });

  it('refuses a socket shared by processes with different executables (ambiguous)', async () => {
    const srv = await holdingServer();
    // Python connects, then forks; the child execs sleep with the socket inherited. The parent says
    // "ready" once the kernel names the child's executable sleep: the state the test is about.
    const code = [
      'import os, socket, sys, time',
      `s = socket.create_connection(("127.0.0.1", ${srv.port}))`,
      's.set_inheritable(True)',
      'pid = os.fork()',
      'if pid == 0: os.execv("/bin/sleep", ["sleep", "30"])',
      'while not os.readlink(f"/proc/{pid}/exe").endswith("/sleep"): time.sleep(0.001)',
      'print("ready", flush=True)',
      'time.sleep(30)',
    ].join('\n');
    const c = runReporting(PYTHON, ['-c', code]);
    const sock = await srv.next();
    await line(c, 'ready');
    const res = await new ProcCallerResolver({ netPid: process.pid }).resolve(queryFor(sock));
    expect(res.ok).toBe(false);
    if (res.ok) return;
    expect(res.finding).toBe('ambiguous-identity');
  });

  it('accepts a socket shared by forked processes running the same executable', async () => {
    const srv = await holdingServer();
    // Both processes hold the socket once the child has printed (it exists, with the socket).
    const code = [
      'import os, socket, time',
      `s = socket.create_connection(("127.0.0.1", ${srv.port}))`,
      'if os.fork() == 0: print("forked", flush=True)',
      'time.sleep(30)',
    ].join('\n');
    const c = runReporting(PYTHON, ['-c', code]);
    const sock = await srv.next();
    await line(c, 'forked');
    const res = await new ProcCallerResolver({ netPid: process.pid }).resolve(queryFor(sock));
    expect(res.ok).toBe(true);
    if (res.ok) expect(res.caller.binary).toMatch(/python/);
  });

  it("takes the client socket's inode from the relay header instead of the TCP table", async () => {
    const srv = await holdingServer();
    run(CURL, ['-s', '--max-time', '5', `http://127.0.0.1:${srv.port}/`]);
    const sock = await srv.next();
    const q = queryFor(sock);
    const inode = findSocketInode(
      readFileSync('/proc/self/net/tcp', 'latin1'),
      readFileSync('/proc/self/net/tcp6', 'latin1'),
      q,
    );
    expect(inode).not.toBeNull();
    const r = new ProcCallerResolver({ netPid: process.pid });
    // A source port that is in no table: only the inode can find the socket.
    const res = await r.resolve({ ...q, srcPort: 1, socketInode: inode });
    expect(res.ok && res.caller.binary).toBe(CURL);
    // An inode nobody holds finds nobody; it is never looked up in the table instead.
    const none = await r.resolve({ ...q, socketInode: 1 });
    expect(none.ok).toBe(false);
  });

  it('refuses when no process holds the socket any more', async () => {
    const srv = await holdingServer();
    const c = run(CURL, ['-s', '--max-time', '1', `http://127.0.0.1:${srv.port}/`]);
    const sock = await srv.next();
    const q = queryFor(sock);
    c.kill('SIGKILL');
    await new Promise((d) => c.once('exit', d));
    const res = await new ProcCallerResolver({ netPid: process.pid }).resolve(q);
    expect(res.ok).toBe(false);
  });

  it('trust on first use: the same path with other content is refused', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'carapace-tofu-'));
    const tool = join(dir, 'tool');
    copyFileSync(CURL, tool);
    const trust = new BinaryTrust();
    const r = new ProcCallerResolver({ netPid: process.pid, binaryTrust: trust });
    const srv = await holdingServer();
    const first = run(tool, ['-s', `http://127.0.0.1:${srv.port}/`]);
    const res1 = await r.resolve(queryFor(await srv.next()));
    expect(res1.ok).toBe(true);
    expect(trust.snapshot()[tool]).toMatch(/^[0-9a-f]{64}$/);
    first.kill('SIGKILL');
    await new Promise((d) => first.once('exit', d));
    // Replace the file at that path with another program that also connects.
    copyFileSync('/usr/bin/wget', tool);
    run(tool, ['-q', '-O', '/dev/null', `http://127.0.0.1:${srv.port}/`]);
    const res2 = await r.resolve(queryFor(await srv.next()));
    expect(res2.ok).toBe(false);
    if (!res2.ok) {
      expect(res2.finding).toBe('binary-replaced');
      expect(res2.binary).toBe(tool);
    }
  });

  it('scopes to a sandbox procfs and reads in-sandbox executable paths', async () => {
    const srv = await holdingServer();
    const ws = mkdtempSync(join(tmpdir(), 'carapace-ws-'));
    copyFileSync(CURL, join(ws, 'fetch'));
    // bwrap: own pid and mount namespaces, the host network (so it can reach our server).
    const b = spawn(
      'bwrap',
      [
        ...MERGED_USR_ROOT,
        '--ro-bind',
        '/etc',
        '/etc',
        '--bind',
        ws,
        '/sandbox',
        '--proc',
        '/proc',
        '--dev',
        '/dev',
        '--unshare-pid',
        '--unshare-ipc',
        '--die-with-parent',
        '--info-fd',
        '3',
        '/bin/sh',
        '-c',
        `/sandbox/fetch -s http://127.0.0.1:${srv.port}/`,
      ],
      { stdio: ['ignore', 'ignore', 'ignore', 'pipe'], detached: true },
    );
    children.push(b);
    let info = '';
    (b.stdio[3] as NodeJS.ReadableStream).on('data', (d) => (info += d));
    const sock = await srv.next();
    const childPid = (JSON.parse(info) as { 'child-pid': number })['child-pid'];
    const r = new ProcCallerResolver({ netPid: process.pid, sandboxProc: `/proc/${childPid}/root/proc` });
    const res = await r.resolve(queryFor(sock));
    expect(res.ok).toBe(true);
    if (!res.ok) return;
    expect(res.caller.binary).toBe('/sandbox/fetch');
    // The walk stops at the sandbox's pid 1 (here bwrap's init): the shell is pid 1's child or pid 1.
    expect(res.caller.ancestors.every((a) => a !== '/sandbox/fetch')).toBe(true);
  });

  it('does not believe a sandbox "procfs" that is a plain directory naming another owner', async () => {
    const srv = await holdingServer();
    run(CURL, ['-s', `http://127.0.0.1:${srv.port}/`]);
    const sock = await srv.next();
    const q = queryFor(sock);
    const hosted = await new ProcCallerResolver({ netPid: process.pid }).resolve(q);
    expect(hosted.ok && hosted.caller.binary).toBe(CURL);
    // A forged tree: pid 7 holds the very socket and runs /usr/bin/allowed. Read as a procfs, it
    // would make the connection /usr/bin/allowed's.
    const inode = findSocketInode(readFileSync('/proc/net/tcp', 'latin1'), '', q);
    expect(inode).not.toBeNull();
    const fake = mkdtempSync(join(tmpdir(), 'carapace-fakeproc-'));
    mkdirSync(join(fake, '7', 'fd'), { recursive: true });
    symlinkSync(`socket:[${inode}]`, join(fake, '7', 'fd', '3'));
    symlinkSync('/usr/bin/allowed', join(fake, '7', 'exe'));
    writeFileSync(join(fake, '7', 'stat'), '7 (allowed) S 1 7 7 0');
    const r = new ProcCallerResolver({ netPid: process.pid, sandboxProc: fake });
    const res = await r.resolve(q);
    r.close();
    rmSync(fake, { recursive: true, force: true });
    expect(res.ok && res.caller.binary).toBe(CURL);
  });

  it('keeps the procfs descriptor open for a lookup in flight when closed, and closes it after', async () => {
    const srv = await holdingServer();
    run(CURL, ['-s', `http://127.0.0.1:${srv.port}/`]);
    const q = queryFor(await srv.next());
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    class SlowTrust extends BinaryTrust {
      override async check(procDir: string, binary: string) {
        await gate; // the lookup awaits here with the descriptor's path in hand
        return super.check(procDir, binary);
      }
    }
    const fds = () => readdirSync('/proc/self/fd').length;
    const before = fds();
    const r = new ProcCallerResolver({
      netPid: process.pid,
      sandboxProc: '/proc',
      binaryTrust: new SlowTrust(),
    });
    const pending = r.resolve(q);
    expect(fds()).toBe(before + 1);
    r.close();
    expect(fds()).toBe(before + 1); // not yet: its number could otherwise name another file
    release();
    const res = await pending;
    expect(res.ok && res.caller.binary).toBe(CURL);
    expect(fds()).toBe(before);
  });

  it('matches /proc/net/tcp rows by the full tuple', () => {
    const tcp = [
      '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode',
      '   0: 0100007F:0C38 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1',
      '   1: 0100007F:D431 0100007F:0C38 01 00000000:00000000 00:00000000 00000000     0        0 222 1',
      '   2: 0100007F:D431 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 333 1',
    ].join('\n');
    const q = {
      family: 4 as const,
      srcAddress: '127.0.0.1',
      srcPort: 0xd431,
      dstAddress: '127.0.0.1',
      dstPort: 3128,
    };
    expect(findSocketInode(tcp, '', q)).toBe(222);
    expect(findSocketInode(tcp, '', { ...q, dstPort: 8080 })).toBe(333);
    expect(findSocketInode(tcp, '', { ...q, srcPort: 1 })).toBeNull();
  });
});
