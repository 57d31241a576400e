/**
 * Landlock as carapace-init applies it to the agent: filesystem rights from --ro/--rw/--write-files,
 * TCP connect only to the relay port and the --bind-port ports, bind only to --bind-port, signal
 * scoping, and the two modes against an older (simulated) kernel.
 */
import { chownSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  events,
  python,
  runSandbox,
  SANDBOX_UID,
  sandboxOwnedDir,
  USUAL_PATHS,
  type SandboxOptions,
} from './harness.js';

const EACCES = 13;
const EPERM = 1;
const ECONNREFUSED = 111;

/** Runs a python snippet that prints one JSON object; returns it. */
async function probe(opts: Omit<SandboxOptions, 'command'>, code: string): Promise<Record<string, unknown>> {
  const r = await runSandbox({
    ...opts,
    command: python(`import json, os, socket, errno\nout = {}\n${code}\nprint(json.dumps(out))`),
  });
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  return JSON.parse(r.stdout) as Record<string, unknown>;
}

/** Python: out[name] = 'ok' or the errno of what `expr` raised. */
function attempt(name: string, statement: string): string {
  return `try:\n    ${statement}\n    out[${JSON.stringify(name)}] = 'ok'\nexcept OSError as e:\n    out[${JSON.stringify(name)}] = e.errno\n`;
}

describe('Landlock filesystem rules', () => {
  it('denies reading a path that was not allowed, and allows the ones that were', async () => {
    const out = await probe(
      { init: ['--ro', '/usr', '--ro', '/proc', '--rw', '/tmp'] },
      attempt('etc', "open('/etc/hostname').read()") +
        attempt('usr', "open('/usr/bin/env', 'rb').read(1)") +
        attempt('list_etc', "os.listdir('/etc')"),
    );
    expect(out).toEqual({ etc: EACCES, usr: 'ok', list_etc: EACCES });
  });

  it('denies writing beneath an --ro path even where the mount is writable; --rw allows all', async () => {
    const code =
      attempt('ro_create', "open('/data/new', 'w').write('x')") +
      attempt('ro_mkdir', "os.mkdir('/data/dir')") +
      attempt('rw_create', "open('/tmp/new', 'w').write('x')") +
      attempt('rw_mkdir', "os.mkdir('/tmp/dir')") +
      attempt('rw_rename', "os.rename('/tmp/new', '/tmp/dir/moved')") +
      attempt('rw_truncate', "os.truncate('/tmp/dir/moved', 0)") +
      attempt('rw_symlink', "os.symlink('/etc/hostname', '/tmp/link')") +
      attempt('rw_unlink', "os.unlink('/tmp/dir/moved')");
    const out = await probe({ init: [...USUAL_PATHS, '--ro', '/data'], bwrap: ['--tmpfs', '/data'] }, code);
    expect(out).toEqual({
      ro_create: EACCES,
      ro_mkdir: EACCES,
      rw_create: 'ok',
      rw_mkdir: 'ok',
      rw_rename: 'ok',
      rw_truncate: 'ok',
      rw_symlink: 'ok',
      rw_unlink: 'ok',
    });
  });

  it('--write-files lets existing files beneath the path be written and truncated, and nothing else', async () => {
    // /data is a host directory of the sandbox's uid, writable as far as the mount goes, with one file.
    const data = sandboxOwnedDir();
    writeFileSync(join(data, 'file'), 'original');
    chownSync(join(data, 'file'), SANDBOX_UID, SANDBOX_UID);
    const code =
      attempt('write', "open('/data/file', 'w').write('changed')") +
      attempt('read', "out['content'] = open('/data/file').read()") +
      attempt('create', "open('/data/new', 'w').write('x')") +
      attempt('mkdir', "os.mkdir('/data/dir')") +
      attempt('unlink', "os.unlink('/data/file')") +
      attempt('rename', "os.rename('/data/file', '/data/moved')");
    const out = await probe(
      {
        init: [...USUAL_PATHS, '--ro', '/data', '--write-files', '/data'],
        bwrap: ['--bind', data, '/data'],
      },
      code,
    );
    expect(out).toEqual({
      write: 'ok',
      read: 'ok',
      content: 'changed',
      create: EACCES,
      mkdir: EACCES,
      unlink: EACCES,
      rename: EACCES,
    });
  });

  it('a symlink in a writable place does not reach past the rules', async () => {
    const out = await probe(
      { init: ['--ro', '/usr', '--rw', '/tmp'] },
      "os.symlink('/etc/hostname', '/tmp/link')\n" + attempt('through_link', "open('/tmp/link').read()"),
    );
    expect(out).toEqual({ through_link: EACCES });
  });

  it('a rule on a single file allows that file only', async () => {
    const out = await probe(
      { init: ['--ro', '/usr', '--ro', '/etc/hostname'] },
      attempt('hostname', "open('/etc/hostname').read()") + attempt('passwd', "open('/etc/passwd').read()"),
    );
    expect(out).toEqual({ hostname: 'ok', passwd: EACCES });
  });

  it('skips a path that does not exist, and says so', async () => {
    const r = await runSandbox({
      init: [...USUAL_PATHS, '--ro', '/no/such/path', '--rw', '/nor/this'],
      command: ['true'],
    });
    expect(r.code).toBe(0);
    expect(events(r, 'landlock')[0]).toMatchObject({ skipped: ['/no/such/path', '/nor/this'] });
  });

  it('denies device ioctls beneath an --ro path (ABI 5), allows them beneath --rw', async () => {
    const code =
      "import fcntl, termios\nfd = os.open('/dev/null', os.O_RDONLY)\n" +
      attempt('ioctl', 'fcntl.ioctl(fd, termios.TCGETS, bytes(64))');
    const ro = await probe({ init: ['--ro', '/usr', '--ro', '/dev'] }, code);
    const rw = await probe({ init: ['--ro', '/usr', '--rw', '/dev'] }, code);
    expect(ro).toEqual({ ioctl: EACCES });
    expect(rw).toEqual({ ioctl: 25 }); // ENOTTY: the ioctl reached the device
  });

  it('reports the ABI, the handled and allowed rights in hex, and the rules', async () => {
    const r = await runSandbox({ init: [...USUAL_PATHS, '--bind-port', '8000'], command: ['true'] });
    expect(events(r, 'landlock')[0]).toEqual({
      event: 'landlock',
      mode: 'best_effort',
      abi: 7,
      kernel_abi: 7,
      abi_max: null,
      handled_fs: '0xffff',
      handled_net: '0x3',
      scoped: '0x3',
      ro_access: '0xd',
      rw_access: '0xffff',
      write_files_access: '0x4002',
      connect_ports: [3128, 8000],
      bind_ports: [8000],
      rules: 7,
      skipped: [],
      missing: [],
    });
  });
});

describe('Landlock network rules (ABI 4)', () => {
  const connect = (port: number): string =>
    attempt(`connect_${port}`, `socket.create_connection(('127.0.0.1', ${port}), timeout=5)`);
  const bind = (port: number): string =>
    attempt(`bind_${port}`, `socket.socket().bind(('127.0.0.1', ${port}))`);

  it('allows TCP connect to the relay port only', async () => {
    // No relay runs here, so the allowed connect reaches the kernel and is refused by it.
    const out = await probe(
      { init: [...USUAL_PATHS, '--relay-port', '3128'] },
      connect(3128) + connect(8080) + connect(443),
    );
    expect(out).toEqual({ connect_3128: ECONNREFUSED, connect_8080: EACCES, connect_443: EACCES });
  });

  it('allows TCP connect to --bind-port ports too: a server of the sandbox answers its own client', async () => {
    const code = `
import threading
server = socket.socket()
server.bind(('127.0.0.1', 8000))
server.listen()
def serve():
    c, _ = server.accept()
    c.sendall(b'pong')
    c.close()
threading.Thread(target=serve, daemon=True).start()
client = socket.create_connection(('127.0.0.1', 8000), timeout=5)
out['reply'] = client.recv(4).decode()
${connect(8001)}`;
    const out = await probe({ init: [...USUAL_PATHS, '--bind-port', '8000', '--bind-port', '0'] }, code);
    expect(out).toEqual({ reply: 'pong', connect_8001: EACCES });
  });

  it('allows TCP bind on --bind-port ports only', async () => {
    const out = await probe(
      { init: [...USUAL_PATHS, '--bind-port', '8000'] },
      bind(8000) + bind(8001) + bind(0),
    );
    expect(out).toEqual({ bind_8000: 'ok', bind_8001: EACCES, bind_0: EACCES });
  });
});

describe('Landlock scoping (ABI 6)', () => {
  it('the agent cannot signal PID 1 (the relay), but can signal its own children', async () => {
    const code =
      attempt('term_pid1', 'os.kill(1, 15)') +
      attempt('kill_pid1', 'os.kill(1, 9)') +
      attempt('probe_pid1', 'os.kill(1, 0)') +
      "import subprocess\nchild = subprocess.Popen(['sleep', '30'])\n" +
      attempt('kill_child', 'os.kill(child.pid, 9)') +
      'child.wait()\n';
    const out = await probe({ init: USUAL_PATHS }, code);
    expect(out).toEqual({ term_pid1: EPERM, kill_pid1: EPERM, probe_pid1: EPERM, kill_child: 'ok' });
  });
});

describe('Landlock compatibility modes', () => {
  const missingBelow4 = [
    'tcp_bind',
    'tcp_connect',
    'ioctl_dev',
    'scope_abstract_unix_socket',
    'scope_signal',
  ];

  it('hard_requirement refuses to start when the usable ABI lacks part of the ruleset', async () => {
    const r = await runSandbox({
      init: [...USUAL_PATHS, '--landlock', 'hard_requirement', '--landlock-abi-max', '3'],
      command: ['true'],
    });
    expect(r.code).toBe(125);
    const message =
      'hard_requirement needs Landlock ABI 6 but ABI 3 is usable (kernel ABI 7, capped by --landlock-abi-max 3); ' +
      `missing ${missingBelow4.join(', ')}: Operation not supported`;
    expect(r.stderr).toBe(`carapace-init: landlock: ${message}\n`);
    expect(events(r, 'error')).toEqual([{ event: 'error', step: 'landlock', errno: 95, message }]);
    expect(events(r, 'exec')).toHaveLength(0);
  });

  it('hard_requirement runs when the kernel has everything', async () => {
    const r = await runSandbox({
      init: [...USUAL_PATHS, '--landlock', 'hard_requirement'],
      command: ['true'],
    });
    expect(r.code).toBe(0);
    expect(events(r, 'landlock')[0]).toMatchObject({ mode: 'hard_requirement', abi: 7, missing: [] });
  });

  it('best_effort applies what the capped ABI has and reports what is missing', async () => {
    const r = await runSandbox({
      init: [...USUAL_PATHS, '--landlock-abi-max', '3'],
      command: python(
        "import socket\ntry:\n    socket.create_connection(('127.0.0.1', 8080))\nexcept OSError as e:\n    print(e.errno)\n" +
          "try:\n    open('/data/x', 'w')\nexcept OSError as e:\n    print(e.errno)",
      ),
      bwrap: ['--tmpfs', '/data'],
    });
    expect(r.code).toBe(0);
    expect(events(r, 'landlock')[0]).toMatchObject({
      abi: 3,
      kernel_abi: 7,
      abi_max: 3,
      handled_fs: '0x7fff',
      handled_net: '0x0',
      scoped: '0x0',
      connect_ports: null,
      missing: missingBelow4,
    });
    // No network rules at ABI 3 (the kernel refuses the connect, not Landlock); files still ruled.
    expect(r.stdout).toBe(`${ECONNREFUSED}\n${EACCES}\n`);
  });

  it('best_effort with no Landlock at all still runs, and lists everything as missing', async () => {
    const r = await runSandbox({ init: ['--landlock-abi-max', '0'], command: ['cat', '/etc/hostname'] });
    expect(r.code).toBe(0);
    expect(events(r, 'landlock')[0]).toMatchObject({ abi: 0, handled_fs: '0x0', rules: 0 });
    expect(events(r, 'landlock')[0]?.missing).toHaveLength(8);
  });
});
