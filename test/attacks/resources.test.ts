/**
 * Resource exhaustion from inside a sandbox: processes, memory, memory-backed filesystems, open
 * files. Each attack must stop at the sandbox's own bound while the host stays responsive (a
 * trivial spawn still completes). Limits come from the policy (cgroups, rlimits) or are fixed by
 * the sandbox (tmpfs sizes, read-only bwrap tmpfs).
 *
 * Not covered here, by design: the workspace (/sandbox) is the host's disk and has no quota; see
 * docs/security.md ("Known gaps").
 */
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { carapace, carapaceAsync, freshHome } from '../helpers/cli.js';
import { policyFile, readAudit, runInSandbox, sharedTempDir } from '../helpers/sandbox.js';

const MiB = 2 ** 20;

const LIMITED = (limits: string) =>
  policyFile(`version: 1
filesystem_policy:
  read_only: [/usr, /lib, /lib64, /bin, /etc]
  read_write: [/sandbox, /tmp]
limits: { ${limits} }
`);

/** Writes 1 MiB blocks to `path` until an error; prints "<MiB written> <errno name>". */
const FILL = (path: string) => [
  'python3',
  '-c',
  [
    'import errno, os',
    'block = b"x" * (1 << 20)',
    'n = 0',
    'try:',
    `    fd = os.open(${JSON.stringify(path)}, os.O_WRONLY | os.O_CREAT, 0o600)`,
    '    while n < 4096:',
    '        os.write(fd, block); n += 1',
    '    print(n, "none")',
    'except OSError as e:',
    '    print(n, errno.errorcode[e.errno])',
  ].join('\n'),
];

function hostResponsive(): void {
  expect(spawnSync('true').status).toBe(0);
}

describe('processes', () => {
  it('a fork bomb under the default policy stops at its pids limit (4096), and the host lives on', () => {
    // Each child is a sleep, so the bomb costs the host little memory while it lasts. posix_spawn
    // (a vfork-like clone) rather than os.fork: what is counted is the processes, and a fork of
    // Python copies its page tables, 13–30 ms a fork on a loaded VM (4,096 of them outlived the
    // timeout). A bound on the wait, not a timing assertion.
    const bomb = [
      'python3',
      '-c',
      [
        'import errno, os',
        'n = 0',
        'try:',
        '    while n < 100000:',
        '        os.posix_spawn("/bin/sleep", ["sleep", "60"], {})',
        '        n += 1',
        'except OSError as e:',
        '    print(n, errno.errorcode[e.errno])',
      ].join('\n'),
    ];
    const r = carapace(['run', '--', ...bomb], { home: freshHome(), timeout: 280_000 });
    expect(r.stderr).toBe('');
    const [count, err] = r.stdout.trim().split(' ');
    expect(err).toBe('EAGAIN');
    expect(Number(count)).toBeGreaterThan(100);
    expect(Number(count)).toBeLessThan(4096);
    hostResponsive();
  }, 300_000);
});

describe('memory', () => {
  it('a memory hog spread over many processes is killed at the memory limit, and the stop is audited', () => {
    const home = freshHome();
    const audit = join(sharedTempDir(), 'audit.jsonl');
    const hog = [
      'python3',
      '-c',
      [
        'import os, time',
        'for _ in range(16):',
        '    if os.fork() == 0:',
        '        b = []',
        '        while True: b.append(bytearray(4 << 20)); time.sleep(0.001)',
        'killed = 0',
        'for _ in range(16):',
        '    _, status = os.wait()',
        '    killed += os.WIFSIGNALED(status) and os.WTERMSIG(status) == 9',
        'print("killed", killed)',
      ].join('\n'),
    ];
    const r = runInSandbox(hog, ['--policy', LIMITED('memory: 128Mi'), '--audit', audit], home);
    // The OOM killer takes the biggest process of the sandbox's cgroup, each time it is full: every
    // hog dies of SIGKILL, the small parent lives on, and nothing outside the cgroup is touched.
    expect(r.stdout.trim()).toBe('killed 16');
    const stop = readAudit(audit).find((e) => e.class_uid === 6002 && e.activity_id === 4);
    expect(stop?.unmapped.oom_kills).toBeGreaterThan(0);
    hostResponsive();
  });

  it('filling /tmp stops at its size, half the memory limit, without killing the agent', () => {
    const r = runInSandbox(FILL('/tmp/fill'), ['--policy', LIMITED('memory: 256Mi')]);
    expect(r.status).toBe(0);
    const [mib, err] = r.stdout.trim().split(' ');
    expect(err).toBe('ENOSPC');
    expect(Number(mib)).toBeLessThanOrEqual(128);
    expect(Number(mib)).toBeGreaterThan(100);
  });

  it('without a memory limit, /tmp is 1 GiB, not half the host memory', () => {
    const r = runInSandbox([
      'python3',
      '-c',
      'import os; s = os.statvfs("/tmp"); print(s.f_blocks * s.f_frsize)',
    ]);
    expect(r.status).toBe(0);
    expect(Number(r.stdout.trim())).toBe(1024 * MiB);
  });

  it('filling /dev/shm stops at 64 MiB', () => {
    const r = runInSandbox(FILL('/dev/shm/fill'));
    expect(r.status).toBe(0);
    const [mib, err] = r.stdout.trim().split(' ');
    expect(err).toBe('ENOSPC');
    expect(Number(mib)).toBeLessThanOrEqual(64);
  });

  // bwrap makes / and /dev tmpfs owned by the sandbox; with Landlock off (an old kernel under
  // best_effort) nothing else would stop a write there, and no size bounds them.
  it.each([
    ['with Landlock', '7'],
    ['without Landlock (ABI 0)', '0'],
  ])('cannot write into bwrap’s own / and /dev tmpfs (%s)', (_what, abi) => {
    const body = [
      'for p in ["/evil", "/dev/evil", "/dev/pts/evil"]:',
      '    try:',
      '        os.close(os.open(p, os.O_WRONLY | os.O_CREAT, 0o600)); print("ok")',
      '    except OSError as e:',
      '        print(errno.errorcode[e.errno])',
      'try:',
      '    os.mkdir("/evil"); print("ok")',
      'except OSError as e:',
      '    print(errno.errorcode[e.errno])',
      'os.write(os.open("/dev/null", os.O_WRONLY), b"x"); print("null ok")',
    ].join('\n');
    const r = carapace(['run', '--', 'python3', '-c', `import errno, os\n${body}`], {
      env: { CARAPACE_LANDLOCK_ABI_MAX: abi },
    });
    expect(r.stderr).toBe('');
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).toBe('EROFS');
    expect(lines[1]).toBe('EROFS');
    expect(['EACCES', 'EROFS']).toContain(lines[2]); // devpts refuses regular files itself
    expect(lines[3]).toBe('EROFS');
    expect(lines[4]).toBe('null ok');
  });
});

describe('open files', () => {
  it('opening files and sockets stops at open_files (default 4096), and the hard limit cannot be raised', () => {
    const body = [
      'import errno, os, resource, socket',
      'held = []',
      'try:',
      '    while len(held) < 100000:',
      '        a, b = socket.socketpair(); held += [a, b]',
      'except OSError as e:',
      '    print(len(held), errno.errorcode[e.errno])',
      'try:',
      '    resource.setrlimit(resource.RLIMIT_NOFILE, (1 << 20, 1 << 20)); print("raised")',
      'except (OSError, ValueError) as e:',
      '    print("EPERM" if isinstance(e, ValueError) else errno.errorcode[e.errno])',
    ].join('\n');
    const r = runInSandbox(['python3', '-c', body]);
    expect(r.stderr).toBe('');
    const [first, second] = r.stdout.trim().split('\n');
    const [count, err] = (first ?? '').split(' ');
    expect(err).toBe('EMFILE');
    expect(Number(count)).toBeLessThanOrEqual(4096);
    expect(Number(count)).toBeGreaterThan(4000);
    expect(second).toBe('EPERM');
    hostResponsive();
  });
});

/** Host pids of the processes named `comm` whose parent is `ppid`. */
function childrenNamed(ppid: number, comm: string): number[] {
  const found: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/comm`, 'utf8').trim() !== comm) continue;
      const status = readFileSync(`/proc/${entry}/status`, 'utf8');
      if (Number(/^PPid:\s+(\d+)/m.exec(status)?.[1]) === ppid) found.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

describe('bulk transfers', () => {
  it("a bulk tunnel's pump runs in the sandbox's cgroups, on the sandbox's account", async () => {
    // The upstream reads 8 MiB (past the 4 MiB after which the proxy hands a tunnel to the pump),
    // then stops reading, so the upload stalls with the pump running.
    const held: net.Socket[] = [];
    const sink = net.createServer((s) => {
      held.push(s);
      s.on('error', () => {});
      let got = 0;
      s.on('data', (d: Buffer) => {
        got += d.length;
        if (got >= 8 * MiB) s.pause();
      });
    });
    await new Promise<void>((r) => sink.listen(0, '127.0.0.1', r));
    const port = (sink.address() as net.AddressInfo).port;
    const name = `pump-cgroup-${process.pid}`;
    const policy = policyFile(`version: 1
filesystem_policy:
  read_only: [/usr, /lib, /lib64, /bin, /etc]
  read_write: [/sandbox, /tmp]
limits: { pids: 512 }
network_policies:
  sink:
    endpoints: [{ host: sink.test, port: ${port} }]
`);
    const upload = [
      'import socket',
      "s = socket.create_connection(('127.0.0.1', 3128))",
      `s.sendall(b'CONNECT sink.test:${port} HTTP/1.1\\r\\nHost: sink.test\\r\\n\\r\\n')`,
      "head = b''",
      "while b'\\r\\n\\r\\n' not in head: head += s.recv(4096)",
      'try:',
      "    s.sendall(b'\\0' * (64 << 20))",
      'except OSError:',
      '    pass',
    ].join('\n');
    const run = carapaceAsync([
      'run',
      '--name',
      name,
      '--policy',
      policy,
      '--resolve',
      'sink.test=127.0.0.1',
      '--allow-local',
      `127.0.0.1:${port}`,
      '--',
      'python3',
      '-c',
      upload,
    ]);
    try {
      let pumps: number[] = [];
      for (let i = 0; i < 200 && pumps.length === 0; i++) {
        await new Promise((d) => setTimeout(d, 50));
        pumps = childrenNamed(run.child.pid as number, 'carapace-pump');
      }
      expect(pumps).toHaveLength(1);
      // /proc/<pid>/cgroup names the sandbox's own cgroup (the pids hierarchy's line on a v1 host,
      // the one line on a v2 host); a pump left in the proxy's cgroup would name another. The
      // proxy moves it there once it is spawned, before it lets it deliver a byte (raw-relay.ts):
      // seen a moment after its spawn, it may not be there yet, so the test waits (a bound).
      const own = new RegExp(`^\\d+:[^:]*:/(.*/)?carapace/${name}\\.[0-9a-f]{8}$`, 'm');
      let cgroups = '';
      for (let i = 0; i < 200 && !own.test(cgroups); i++) {
        if (i > 0) await new Promise((d) => setTimeout(d, 50));
        cgroups = readFileSync(`/proc/${pumps[0]}/cgroup`, 'utf8');
      }
      expect(cgroups).toMatch(own);
    } finally {
      for (const s of held) s.destroy();
      sink.close();
    }
    const r = await run.result;
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  });
});
