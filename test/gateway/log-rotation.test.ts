/**
 * A gateway's sandbox writes as fast as it can to fill the host's disk through its agent output
 * log (docs/gateway.md, "The agent's output log"; docs/security.md, Resources). A real gateway with
 * `--log-rotate 1Mi:2`, a real sandbox whose agent writes bursts of 3 MiB, and the real `carapace
 * sandbox logs` (-f, --tail) reading the result. Without rotation the file grows by every burst.
 *
 * The second burst comes while no gateway runs: the init fills its file and drops the rest (the
 * agent never blocks), and the next gateway, re-adopting the sandbox, gets the request that waited
 * and rotates; the new file's first line counts what was dropped. Symlinks planted meanwhile where
 * `.1` and the new file go are not followed.
 */
import { spawn } from 'node:child_process';
import {
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmdirSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GatewayClient } from '../../src/cli/gateway/gateway-client.js';
import { CLI, freshHome } from '../helpers/cli.js';
import { cliAs, startTestGateway, until, type TestGateway } from '../helpers/gateway.js';
import { FS_POLICY } from '../helpers/network.js';
import { holds } from '../helpers/premises.js';

const MiB = 1024 * 1024;

const AGENT = [
  'import os, time',
  'def wait(name):',
  '    while not os.path.exists("/sandbox/" + name): time.sleep(0.02)',
  'def mark(name):',
  '    open("/sandbox/" + name + ".tmp", "w").close(); os.rename("/sandbox/" + name + ".tmp", "/sandbox/" + name)',
  'n = 0',
  'def burst(size, tag):',
  '    global n',
  '    out, total = [], 0',
  '    while total < size:',
  '        n += 1',
  '        line = f"{tag} {n:08d} " + "x" * 90 + "\\n"',
  '        out.append(line); total += len(line)',
  '        if len(out) == 100: os.write(1, "".join(out).encode()); out = []',
  '    if out: os.write(1, "".join(out).encode())',
  `burst(${3 * MiB}, "one"); mark("one")`,
  `wait("go2"); burst(${3 * MiB}, "two"); mark("two")`,
  'wait("go3"); os.write(1, b"final\\n")',
  `wait("go4"); burst(${1.5 * MiB}, "four"); mark("four")`,
  'wait("go5"); os.write(1, b"end\\n")',
  'time.sleep(1e9)',
].join('\n');

interface Line {
  t: number;
  s: 'out' | 'err' | 'init';
  d?: string;
  dropped?: number;
}

/** The whole lines of `text` (a line still being written is left out). */
const parse = (text: string): Line[] =>
  text
    .slice(0, text.lastIndexOf('\n') + 1)
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Line);

/** The agent's line numbers in what `lines` hold (a line cut by a read or a drop is skipped). */
function numbers(lines: Line[]): number[] {
  const text = lines
    .filter((l) => l.s === 'out')
    .map((l) => l.d ?? '')
    .join('');
  return [...text.matchAll(/^(?:one|two|four) (\d{8}) x{90}$/gm)].map((m) => Number(m[1]));
}

const increasing = (ns: number[]) => ns.every((n, i) => i === 0 || n > ns[i - 1]!);

/** Whether the init of the sandbox `id` under `home` holds `file` (its log fd). */
function initHolds(home: string, id: string, file: string): boolean {
  const lock = join(home, 'run', 'sandboxes', `${id}.lock`);
  const { pid } = JSON.parse(readFileSync(lock, 'utf8')) as { pid: number };
  return readdirSync(`/proc/${pid}/fd`).some((fd) => {
    try {
      return readlinkSync(`/proc/${pid}/fd/${fd}`) === file;
    } catch {
      return false;
    }
  });
}

describe.skipIf(!holds('root'))('agent log rotation in a gateway', () => {
  let gw: TestGateway;
  const home = freshHome();
  beforeAll(async () => {
    gw = await startTestGateway(['--log-rotate', '1Mi:2'], home);
  });
  afterAll(async () => {
    cliAs(gw.home, ['sandbox', 'delete', 'chatty']);
    cliAs(gw.home, ['sandbox', 'delete', 'stuck']);
    await gw.stop();
  });

  it('keeps a fast writer to SIZE × FILES, rotates across a gateway restart, counts what it dropped, and `sandbox logs` reads across the files', async () => {
    const api = new GatewayClient({
      socket: join(home, 'run', 'gateway.sock'),
      own: false,
      dirs: { state: join(home, 'state'), run: join(home, 'run') },
    });
    const view = await api.call<{ id: string; workspace: string }>('POST', '/v1/sandboxes', {
      name: 'chatty',
      command: ['python3', '-c', AGENT],
      policy: FS_POLICY,
    });
    const logs = join(home, 'state', 'logs');
    const files = () => readdirSync(logs).filter((n) => n.startsWith(view.id));
    const sizes = () => files().map((n) => lstatSync(join(logs, n)).size);
    const ws = (name: string) => join(view.workspace, name);
    const current = join(logs, `${view.id}.log`);
    const identity = (file: string) => `${lstatSync(file).dev}:${lstatSync(file).ino}`;
    const initWrites = (file: string) => initHolds(home, view.id, file);

    // 1. A burst of three times the limit, the gateway answering: rotated, no file past 1 MiB.
    await until('the first burst', () => existsSync(ws('one')), 120_000);
    await until('rotated', () => existsSync(`${current}.1`));
    for (const size of sizes()) expect(size).toBeLessThanOrEqual(MiB);

    // 2. The gateway goes; the agent writes another burst; symlinks wait where the files go.
    await gw.stop();
    writeFileSync(ws('go2'), '');
    await until('the second burst', () => existsSync(ws('two')), 120_000);
    for (const size of sizes()) expect(size).toBeLessThanOrEqual(MiB);
    const bait = join(home, 'bait');
    writeFileSync(bait, 'untouched\n');
    unlinkSync(`${current}.1`);
    symlinkSync(bait, `${current}.1`);
    symlinkSync(bait, `${current}.new`);
    const full = identity(current);

    // 3. The next gateway re-adopts it and answers the request that waited.
    gw = await startTestGateway(['--log-rotate', '1Mi:2'], home);
    await until(
      'the full file rotated',
      () => existsSync(`${current}.1`) && identity(`${current}.1`) === full,
    );
    writeFileSync(ws('go3'), '');
    const logged = (d: string) =>
      [`${current}.1`, current].some((f) => parse(readFileSync(f, 'utf8')).some((l) => l.d === d));
    await until('the last line logged', () => logged('final\n'));
    expect(readFileSync(bait, 'utf8')).toBe('untouched\n');
    expect(lstatSync(`${current}.1`).isFile()).toBe(true);
    expect(files().sort()).toEqual([`${view.id}.log`, `${view.id}.log.1`]);
    for (const size of sizes()) expect(size).toBeLessThanOrEqual(MiB);

    const all = cliAs(home, ['sandbox', 'logs', 'chatty', '-o', 'json']);
    expect(all.stderr).toBe('');
    expect(all.status).toBe(0);
    const lines = parse(all.stdout);
    const onDisk = [`${current}.1`, current].flatMap((f) => parse(readFileSync(f, 'utf8')));
    expect(lines).toEqual(onDisk); // both files, oldest first
    // The burst while no gateway answered: at least the 2 MiB past one file, dropped and counted.
    const drops = lines.filter((l) => l.s === 'init' && l.dropped !== undefined);
    for (const d of drops) expect(d.d).toMatch(/^carapace-init: logs: \d+ bytes of output dropped/);
    expect(Math.max(...drops.map((d) => d.dropped!))).toBeGreaterThan(MiB);
    expect(lines.at(-1)).toMatchObject({ s: 'out', d: 'final\n' });
    expect(increasing(numbers(lines))).toBe(true);

    const tail = cliAs(home, ['sandbox', 'logs', 'chatty', '--tail', '3', '-o', 'json']);
    expect(parse(tail.stdout)).toEqual(lines.slice(-3));

    // 4. -f follows across a rotation: every line of the next burst that is on disk, in order.
    const follower = spawn(
      process.execPath,
      [CLI, 'sandbox', 'logs', 'chatty', '-f', '--tail', '1', '-o', 'json'],
      {
        env: { PATH: process.env.PATH, CARAPACE_HOME: home, LANG: 'C.UTF-8' },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let followed = '';
    follower.stdout.on('data', (d: Buffer) => (followed += String(d)));
    await until('the follower started', () => parse(followed).some((l) => l.d === 'final\n'));
    const rotatedBefore = identity(`${current}.1`);
    writeFileSync(ws('go4'), '');
    // "end" must not be dropped: written once the init writes to a file far from full.
    await until('the burst written', () => existsSync(ws('four')), 120_000);
    await until('no rotation pending', () => initWrites(current) && lstatSync(current).size < MiB / 2);
    writeFileSync(ws('go5'), '');
    await until('the follower reached the end', () => parse(followed).some((l) => l.d === 'end\n'), 120_000);
    follower.kill();
    expect(identity(`${current}.1`)).not.toBe(rotatedBefore); // rotated while it followed
    for (const size of sizes()) expect(size).toBeLessThanOrEqual(MiB);
    const live = parse(followed);
    expect(live[0]).toMatchObject({ d: 'final\n' });
    expect(numbers(live).length).toBeGreaterThan(1000);
    expect(increasing(numbers(live))).toBe(true);
    // What is on disk from the burst on came to the follower whole and in order.
    const disk = [`${current}.1`, current].flatMap((f) => parse(readFileSync(f, 'utf8')));
    const fromFinal = disk.findIndex((l) => l.d === 'final\n');
    const diskBurst = disk.slice(fromFinal + 1);
    expect(diskBurst.length).toBeGreaterThan(10); // lines of up to 16 KiB each
    expect(live.slice(-diskBurst.length)).toEqual(diskBurst);

    // Deleting the sandbox removes every file of its log.
    expect(cliAs(home, ['sandbox', 'delete', 'chatty']).status).toBe(0);
    expect(files()).toEqual([]);
  }, 600_000);
  it('tries a failed rotation again until it succeeds: the full init gets its new file without a restart', async () => {
    const api = new GatewayClient({
      socket: join(home, 'run', 'gateway.sock'),
      own: false,
      dirs: { state: join(home, 'state'), run: join(home, 'run') },
    });
    const agent = [
      'import os, time',
      'line = "x" * 99 + "\\n"',
      `for _ in range(${Math.floor((3 * MiB) / 100)}): os.write(1, line.encode())`,
      'open("/sandbox/burst", "w").close()',
      'while not os.path.exists("/sandbox/go"): time.sleep(0.02)',
      'os.write(1, b"after\\n")',
      'time.sleep(1e9)',
    ].join('\n');
    const logs = join(home, 'state', 'logs');
    // What the gateway makes first when it rotates, taken: every answer fails until it is gone.
    const view0 = await api.call<{ id: string; workspace: string }>('POST', '/v1/sandboxes', {
      name: 'stuck',
      command: [
        'sh',
        '-c',
        'while [ ! -e /sandbox/start ]; do sleep 0.02; done; exec python3 -c "$0"',
        agent,
      ],
      policy: FS_POLICY,
    });
    const current = join(logs, `${view0.id}.log`);
    mkdirSync(`${current}.new`);
    writeFileSync(join(view0.workspace, 'start'), '');
    await until('the burst written', () => existsSync(join(view0.workspace, 'burst')), 120_000);
    await until(
      'both requests refused',
      () => gw.output().split('cannot rotate a sandbox log').length > 2,
      60_000,
    );
    expect(existsSync(`${current}.1`)).toBe(false);
    expect(lstatSync(current).size).toBeLessThanOrEqual(MiB);

    rmdirSync(`${current}.new`);
    await until('rotated by a retry', () => existsSync(`${current}.1`), 60_000);
    // The rename comes first, then the new file is handed to the init: a line before that is
    // dropped as the full file's, so the agent writes once the init holds the new one.
    await until('the init holds the new file', () => initHolds(home, view0.id, current), 60_000);
    writeFileSync(join(view0.workspace, 'go'), '');
    await until('the line after logged', () =>
      parse(readFileSync(current, 'utf8')).some((l) => l.d === 'after\n'),
    );
    const lines = parse(readFileSync(current, 'utf8'));
    expect(lines[0]).toMatchObject({ s: 'init' });
    expect(lines[0]!.dropped).toBeGreaterThan(MiB);
    expect(lines.at(-1)).toMatchObject({ s: 'out', d: 'after\n' });
    for (const f of [current, `${current}.1`]) expect(lstatSync(f).size).toBeLessThanOrEqual(MiB);
  }, 300_000);
});
