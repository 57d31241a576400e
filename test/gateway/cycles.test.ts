/**
 * 100 create / exec / delete cycles through one gateway leave nothing behind: no descriptor,
 * cgroup, uid record, mount, socket, file or directory more than before, and no memory growth
 * beyond noise once warm.
 */
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LIMIT_CONTROLLERS, readCgroupLayout } from '../../src/sandbox/cgroup/cgroup-layout.js';
import { cgroupParent } from '../../src/sandbox/cgroup/cgroup.js';
import { GatewayClient } from '../../src/cli/gateway/gateway-client.js';
import { execOver } from '../../src/sandbox/control/control-exec.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { holds } from '../helpers/premises.js';
import { hostUidRecords } from '../helpers/sandbox.js';

/** Ids of the sandboxes this test made: cgroups are host-wide, and other tests run meanwhile. */
const made = new Set<string>();

function census(gw: TestGateway) {
  const pid = gw.child.pid!;
  const layout = readCgroupLayout();
  const cgroups = LIMIT_CONTROLLERS.flatMap((c) => {
    const p = cgroupParent(c, layout);
    return p && existsSync(p.parent) ? readdirSync(p.parent).filter((d) => made.has(d.split('.')[0]!)) : [];
  });
  const list = (d: string) => (existsSync(d) ? readdirSync(d).sort() : []);
  return {
    // Less one listening socket per member of the carapace group: other tests add and remove
    // users meanwhile, and the gateway serves each a socket of their own (run/users/UID.sock).
    fds:
      readdirSync(`/proc/${pid}/fd`).length -
      list(join(gw.home, 'run', 'users')).filter((f) => f.endsWith('.sock')).length,
    cgroups,
    uids: hostUidRecords(join(gw.home, 'state')).length,
    mounts: readFileSync('/proc/self/mountinfo', 'utf8').split('\n').length,
    sockets: list(join(gw.home, 'run', 'net')),
    runtime: list(join(gw.home, 'run', 'sandboxes')),
    storage: list(join(gw.home, 'state', 'sandboxes')),
    logs: list(join(gw.home, 'state', 'logs')),
    audit: list(join(gw.home, 'state', 'audit')),
    children: readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim(),
  };
}

/** What each of the gateway's descriptors is (for the message when the count moved). */
const fdKinds = (gw: TestGateway) =>
  readdirSync(`/proc/${gw.child.pid}/fd`).map((fd) => {
    try {
      return readlinkSync(`/proc/${gw.child.pid}/fd/${fd}`);
    } catch {
      return 'gone';
    }
  });

const rssKiB = (pid: number) =>
  Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);

describe.skipIf(!holds('root'))('100 create / exec / delete cycles', () => {
  let gw: TestGateway;
  let client: GatewayClient;
  beforeAll(async () => {
    // A small heap: V8 then collects garbage as it goes, so what stays is what is kept (a leak),
    // not what a lazy collector has not got round to (measured: RSS flat over 400 cycles).
    gw = await startTestGateway([], undefined, { NODE_OPTIONS: '--max-old-space-size=48' });
    client = new GatewayClient({
      socket: join(gw.home, 'run', 'gateway.sock'),
      own: true,
      dirs: { state: join(gw.home, 'state'), run: join(gw.home, 'run') },
    });
  });
  afterAll(() => gw?.stop());

  it('leave no fd, cgroup, uid record, mount, socket, file or memory growth', async () => {
    const cycle = async (i: number) => {
      const policy =
        'version: 1\nfilesystem_policy:\n  read_only: [/usr, /lib, /lib64, /bin, /etc]\n  read_write: [/sandbox, /tmp]\nlimits: { pids: 64, memory: 128Mi }\nnetwork_policies: {}\n';
      const { id } = await client.call<{ id: string }>('POST', '/v1/sandboxes', {
        name: `c${i}`,
        command: ['sleep', '300'],
        policy,
      });
      made.add(id);
      // An exec through the gateway each cycle: its bridge and control connection must go too.
      const proc = execOver(
        await client.upgrade(`/v1/sandboxes/c${i}/exec`),
        { argv: ['sh', '-c', 'echo $$'], env: {}, tty: false },
        `c${i}`,
      );
      proc.stdin.end();
      let out = '';
      proc.stdout.on('data', (d: Buffer) => (out += String(d)));
      proc.stderr.resume();
      expect(await proc.exited).toBe(0);
      expect(out).toMatch(/^\d+\n$/);
      await client.call('DELETE', `/v1/sandboxes/c${i}`);
    };
    for (let i = 0; i < 40; i++) await cycle(i); // the heap reaches its working size
    const before = census(gw);
    const rssBefore = rssKiB(gw.child.pid!);
    for (let i = 40; i < 140; i++) await cycle(i);
    // The last cycle's connections (the API call, the exec's bridge) close as the event loop gets
    // to them: a few moments for that, which a leak would not use up.
    let after = census(gw);
    for (let i = 0; i < 30 && JSON.stringify(after) !== JSON.stringify(before); i++) {
      await sleep(100);
      after = census(gw);
    }
    expect(after, `the gateway's descriptors now: ${fdKinds(gw).join(' ')}`).toEqual(before);
    expect(after.cgroups).toEqual([]);
    expect(after.uids).toBe(0);
    // RSS moves by tens of megabytes with the allocator and the collector (measured: 15-25 MiB over
    // these 100 cycles, flat over 400): what this bound catches is a leak of half a megabyte or more
    // per cycle (a proxy attachment, a CA, the agent's output kept); smaller leaks are for the
    // census above and the benchmark's 1,000 sandboxes.
    expect(rssKiB(gw.child.pid!) - rssBefore).toBeLessThan(48 * 1024);
  }, 300_000); // 140 cycles of real sandboxes: about a minute on a busy two-core host
});
