/**
 * Network escapes that do not go through the proxy at all (the default policy's sandbox has no
 * relay; a --policy sandbox has one, and these bypass it): direct TCP to the host over IPv4 and IPv6, UDP, raw and packet sockets, DNS,
 * and abstract unix sockets of host services. Everything here stays on loopback or inside a
 * network namespace: the only listeners are the test's own, on 127.0.0.1 / ::1 / abstract names.
 *
 * Two layers meet each attack: the network namespace (only `lo`, which is the sandbox's own) and
 * Landlock (TCP connect only to the relay port; abstract unix sockets scoped). Where practical a
 * test takes one layer away to show the other holds too, and runs the attack on the host as the
 * baseline.
 */
import { randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { events, python, runSandbox, USUAL_PATHS } from '../native/harness.js';
import { carapace } from '../helpers/cli.js';
import {
  policyFile,
  pySyscall,
  readAudit,
  runInSandbox,
  runOnHost,
  sharedTempDir,
} from '../helpers/sandbox.js';

const lines = (s: string) => s.trim().split('\n');

async function listen(server: Server, host: string): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  return (server.address() as { port: number }).port;
}

describe('direct connections to the host', () => {
  it('TCP to a host listener on 127.0.0.1 and ::1: EACCES (Landlock); without it, ECONNREFUSED (netns)', async () => {
    let accepted = 0;
    const v4 = createServer((s) => (accepted++, s.destroy()));
    const v6 = createServer((s) => (accepted++, s.destroy()));
    const [p4, p6] = [await listen(v4, '127.0.0.1'), await listen(v6, '::1')];
    try {
      const body = [
        `attempt(lambda: socket.create_connection(("127.0.0.1", ${p4}), timeout=5))`,
        `attempt(lambda: socket.create_connection(("::1", ${p6}), timeout=5))`,
      ].join('\n');
      expect(lines(runInSandbox(pySyscall(body)).stdout)).toEqual(['EACCES', 'EACCES']);
      // Landlock capped below ABI 4 (no network rules): the connect happens, in the sandbox's own
      // namespace, where nothing listens on that port.
      const noLandlock = carapace(['run', '--', ...pySyscall(body)], {
        env: { CARAPACE_LANDLOCK_ABI_MAX: '3' },
      });
      expect(lines(noLandlock.stdout)).toEqual(['ECONNREFUSED', 'ECONNREFUSED']);
      expect(accepted).toBe(0);
      // Baseline: an unprivileged host process reaches both.
      expect(lines(runOnHost(pySyscall(body)).stdout)).toEqual(['ok', 'ok']);
    } finally {
      v4.close();
      v6.close();
    }
  });

  it('UDP to a host listener on 127.0.0.1 and ::1 never arrives', async () => {
    const got: string[] = [];
    const sockets = [createSocket('udp4'), createSocket('udp6')];
    const ports: number[] = [];
    for (const [i, s] of sockets.entries()) {
      s.on('message', (m) => got.push(m.toString()));
      await new Promise<void>((resolve) => s.bind(0, i === 0 ? '127.0.0.1' : '::1', resolve));
      ports.push(s.address().port);
    }
    try {
      const send = (who: string) =>
        [
          `attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"${who}", ("127.0.0.1", ${ports[0]})))`,
          `attempt(lambda: socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).sendto(b"${who}", ("::1", ${ports[1]})))`,
        ].join('\n');
      const inside = runInSandbox(pySyscall(send('inside')));
      // Sent, to the sandbox's own loopback: nothing listens there.
      expect(lines(inside.stdout)).toEqual(['ok', 'ok']);
      expect(lines(runOnHost(pySyscall(send('host'))).stdout)).toEqual(['ok', 'ok']);
      await new Promise((r) => setTimeout(r, 500));
      expect(got.sort()).toEqual(['host', 'host']);
    } finally {
      for (const s of sockets) s.close();
    }
  });

  it('the namespace has only lo, and no route anywhere else', () => {
    const body = [
      'print(socket.if_nameindex())',
      // TEST-NET-1: never routed; inside, no route exists to send it on.
      'attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("192.0.2.1", 9)))',
      'attempt(lambda: socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).sendto(b"x", ("2001:db8::1", 9)))',
    ].join('\n');
    expect(lines(runInSandbox(pySyscall(body)).stdout)).toEqual([
      "[(1, 'lo')]",
      'ENETUNREACH',
      'ENETUNREACH',
    ]);
  });
});

describe('raw and packet sockets', () => {
  const OPEN = [
    'attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))',
    'attempt(lambda: socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6))',
    'attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP))  # ping socket',
    'attempt(lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0))',
  ].join('\n');

  it('raw (no CAP_NET_RAW), ping (no group in range) and packet (seccomp) sockets are refused; root on the host opens them', () => {
    expect(lines(runInSandbox(pySyscall(OPEN)).stdout)).toEqual(['EPERM', 'EPERM', 'EACCES', 'EPERM']);
    // Baseline: opening them (no traffic is sent) works for root on the host.
    const host = lines(runOnHost(pySyscall(OPEN), 0).stdout);
    expect([host[0], host[1], host[3]]).toEqual(['ok', 'ok', 'ok']);
  });
});

describe('DNS', () => {
  it('no resolver is reachable: lookups fail and a query to the configured nameserver gets no answer', () => {
    const body = `
import ipaddress
try:
    socket.getaddrinfo("carapace-attack.example.com", 443)
    print("resolved")
except socket.gaierror:
    print("no resolution")
servers = [l.split()[1] for l in open("/etc/resolv.conf") if l.startswith("nameserver")]
query = bytes.fromhex("abcd01000001000000000000076578616d706c6503636f6d0000010001")
for ns in servers or ["127.0.0.53"]:
    fam = socket.AF_INET6 if ":" in ns else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM); s.settimeout(2)
    try:
        s.sendto(query, (ns, 53)); s.recvfrom(512); print("answered")
    except (OSError, TimeoutError):
        print("no answer")
    try:
        socket.create_connection((ns, 53), timeout=2); print("tcp connected")
    except OSError:
        print("no tcp")
`;
    const out = lines(runInSandbox(pySyscall(body)).stdout);
    expect(out[0]).toBe('no resolution');
    expect(out.length).toBeGreaterThanOrEqual(3);
    expect(out.slice(1).filter((l) => l === 'answered' || l === 'tcp connected')).toEqual([]);
  });
});

describe('abstract unix sockets of host services', () => {
  // Abstract names have no file and no permissions: anyone in the same network namespace may
  // connect. A host service listening on one (X11, D-Bus, containerd have) is the target.
  async function hostAbstractServer(): Promise<{ name: string; accepted: () => number; close(): void }> {
    const name = `carapace-attack-${randomBytes(6).toString('hex')}`;
    let accepted = 0;
    const server = createServer((s) => (accepted++, s.destroy()));
    await new Promise<void>((resolve) => server.listen(`\0${name}`, resolve));
    return { name, accepted: () => accepted, close: () => server.close() };
  }
  // The libuv of Node 24 binds an abstract name as given (Node 20's padded it with NULs to 108 bytes).
  const CONNECT = (name: string) =>
    pySyscall(`attempt(lambda: socket.socket(socket.AF_UNIX).connect("\\0${name}"))`);

  it('ECONNREFUSED inside (another network namespace); an unprivileged host process connects', async () => {
    const host = await hostAbstractServer();
    try {
      expect(lines(runInSandbox(CONNECT(host.name)).stdout)).toEqual(['ECONNREFUSED']);
      expect(host.accepted()).toBe(0);
      expect(lines(runOnHost(CONNECT(host.name)).stdout)).toEqual(['ok']);
    } finally {
      host.close();
    }
  });

  it("with the host's network namespace shared, Landlock's scope alone still refuses (EPERM)", async () => {
    // carapace-init under bwrap --share-net (the namespace layer taken away), as in test/native.
    const host = await hostAbstractServer();
    try {
      const run = (abiMax: string[]) =>
        runSandbox({
          init: [...USUAL_PATHS, ...abiMax],
          bwrap: ['--share-net'],
          command: python(CONNECT(host.name)[2]!),
        });
      const scoped = await run([]);
      expect(events(scoped, 'landlock')[0]?.scoped).toBe('0x3');
      expect(lines(scoped.stdout)).toEqual(['EPERM']);
      expect(host.accepted()).toBe(0);
      // And with both layers gone (Landlock ABI 5 has no scoping), the very same connect works.
      const unscoped = await run(['--landlock-abi-max', '5']);
      expect(lines(unscoped.stdout)).toEqual(['ok']);
    } finally {
      host.close();
    }
  });
});

describe("the sandbox's own loopback services", () => {
  // OpenClaw binds its gateway on 18789 and its own CLI connects to it: the policy lists the port.
  const POLICY = `version: 1
filesystem_policy:
  read_only: [/usr, /lib, /lib64, /bin, /etc]
  read_write: [/sandbox, /tmp]
listen_ports: [18789]
network_policies: {}
`;
  const SERVE_AND_CONNECT = `
import threading
server = socket.socket()
server.bind(("127.0.0.1", 18789))
server.listen()
def serve():
    c, _ = server.accept()
    c.sendall(b"gateway here")
    c.close()
threading.Thread(target=serve, daemon=True).start()
c = socket.create_connection(("127.0.0.1", 18789), timeout=5)
print(c.recv(64).decode())
attempt(lambda: socket.socket().bind(("127.0.0.1", 18790)))
attempt(lambda: socket.create_connection(("127.0.0.1", 18790), timeout=5))
`;

  it('a server bound on a listen_ports port answers a client in the same sandbox; other ports stay closed, and the refused connect is audited with a hint', () => {
    const audit = join(sharedTempDir(), 'audit.jsonl');
    const r = carapace([
      'run',
      '--policy',
      policyFile(POLICY),
      '--audit',
      audit,
      '--',
      ...pySyscall(SERVE_AND_CONNECT),
    ]);
    expect(r.stderr).toBe('');
    expect(lines(r.stdout)).toEqual(['gateway here', 'EACCES', 'EACCES']);
    // One 4001 refusal: the connect to 18790. The listed port and the relay leave none.
    const refused = readAudit(audit).filter((e) => e.class_uid === 4001);
    expect(refused).toHaveLength(1);
    expect(refused[0]).toMatchObject({
      activity_id: 5,
      disposition: 'Blocked',
      dst_endpoint: { hostname: '127.0.0.1', port: 18790, ip: '127.0.0.1' },
      actor: { process: { file: { path: expect.stringMatching(/^\/usr\/bin\/python3/) } } },
      unmapped: {
        refused_by: 'landlock',
        protocol: 'tcp',
        reason:
          "direct tcp connection to 127.0.0.1:18790 refused by Landlock: port 18790 is not in the policy's listen_ports",
        hint: expect.stringContaining('add 18790 to listen_ports'),
      },
    });
  });

  it('a direct connection that bypasses the proxy is refused and audited, naming the proxy as the way', () => {
    const audit = join(sharedTempDir(), 'audit.jsonl');
    const body = [
      // TEST-NET-1, never routed: there is no route out of the sandbox but the relay.
      'attempt(lambda: socket.create_connection(("192.0.2.1", 443), timeout=5))',
      'attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).connect(("192.0.2.1", 53)))',
    ].join('\n');
    const r = carapace(['run', '--policy', policyFile(POLICY), '--audit', audit, '--', ...pySyscall(body)]);
    expect(lines(r.stdout)).toEqual(['EACCES', 'ENETUNREACH']);
    const refused = readAudit(audit).filter((e) => e.class_uid === 4001);
    expect(refused.map((e) => [e.unmapped.protocol, e.dst_endpoint, e.unmapped.refused_by])).toEqual([
      ['tcp', { hostname: '192.0.2.1', port: 443, ip: '192.0.2.1' }, 'landlock'],
      ['udp', { hostname: '192.0.2.1', port: 53, ip: '192.0.2.1' }, 'network'],
    ]);
    for (const e of refused) expect(e.unmapped.hint).toContain('HTTP_PROXY');
  });
});
