/**
 * `carapace run` through a running gateway, attacked (red-team of 2026-12-01): clients that hang
 * up around the upgrade or send no request, a client that reads stdin faster than the command,
 * a waiting sandbox's findings, and a workspace of many files removed while the gateway serves
 * others. What a run gives its command is test/gateway/run.test.ts's.
 */
import { spawn, spawnSync } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  truncateSync,
} from 'node:fs';
import { request } from 'node:http';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI } from '../helpers/cli.js';
import {
  auditText,
  makeUser,
  sandboxesOnHost,
  startTestGateway,
  until,
  type TestGateway,
} from '../helpers/gateway.js';
import { holds } from '../helpers/premises.js';
import { setTimeout as sleep } from 'node:timers/promises';

const UPGRADE =
  'GET /v1/runs HTTP/1.1\r\nHost: carapace\r\nConnection: Upgrade\r\nUpgrade: carapace-stream\r\n\r\n';

/**
 * A raw client of `GET /v1/runs`: leaves before the 101, right after it, or never (keeping its end
 * open, after sending `send`); resolves with the refusal frame's text it read, if any.
 */
function upgradeRun(
  path: string,
  o: { leave: 'before-101' | 'after-101' | 'never'; send?: string },
): Promise<{ socket: Socket; refusal: string }> {
  return new Promise((resolve) => {
    const socket = connect({ path, allowHalfOpen: true });
    socket.on('error', () => {});
    let got = Buffer.alloc(0);
    const refusal = () => {
      const at = got.indexOf('\r\n\r\n');
      return at < 0 || got.length < at + 9 ? '' : got.subarray(at + 9).toString('utf8');
    };
    socket.on('data', (d: Buffer) => {
      got = Buffer.concat([got, d]);
      if (!got.includes('\r\n\r\n')) return;
      if (o.leave === 'after-101') {
        socket.end();
        resolve({ socket, refusal: '' });
      } else if (o.send !== undefined) {
        socket.write(o.send);
        o.send = undefined;
      } else if (refusal() !== '') resolve({ socket, refusal: refusal() });
    });
    socket.write(UPGRADE, () => {
      if (o.leave !== 'before-101') return;
      socket.destroy();
      resolve({ socket, refusal: '' });
    });
  });
}

/** One GET on the gateway's socket, resolved once answered. */
function apiGet(socketPath: string, path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, path, method: 'GET' }, (res) => {
      res.resume();
      res.once('end', () => resolve());
    });
    req.once('error', reject);
    req.end();
  });
}

function openAndClose(path: string): string {
  closeSync(openSync(path, 'w'));
  return path;
}

/**
 * Whether the gateway answered a request while `dir` (of `files` entries) was part-way removed.
 * Removed in one synchronous call, no request could be answered between its first file and its
 * last: a count seen part-way, then an answer, would find the directory gone.
 */
async function answeredWhileRemoving(gw: TestGateway, dir: string, files: number): Promise<boolean> {
  for (;;) {
    let left: number;
    try {
      left = readdirSync(dir).length;
    } catch {
      return false; // gone
    }
    if (left === files) {
      await sleep(20); // not begun yet
      continue;
    }
    await apiGet(join(gw.home, 'run', 'gateway.sock'), '/v1/sandboxes');
    if (existsSync(dir)) return true;
  }
}

describe.skipIf(!holds('root'))('carapace run through a running gateway, under attack', () => {
  let gw: TestGateway;
  const run = (args: string[], input?: string) =>
    spawnSync(process.execPath, [CLI, 'run', ...args], {
      encoding: 'utf8',
      input,
      env: { PATH: process.env.PATH, CARAPACE_HOME: gw.home },
      timeout: 60_000,
    });

  beforeAll(async () => {
    gw = await startTestGateway();
  });
  afterAll(async () => {
    await gw?.stop();
  });

  it('outlives clients that leave around the upgrade, and ends the run of one that sends no request', async () => {
    const socket = join(gw.home, 'run', 'gateway.sock');
    // Left before the 101 (the gateway writes it to a closed socket: EPIPE), and left right after
    // it (the refusal is written after the socket ended): either, unheard, ended the gateway.
    const early = Array.from({ length: 4 }, () => upgradeRun(socket, { leave: 'before-101' }));
    await Promise.all(early);
    for (let i = 0; i < 3; i++) (await upgradeRun(socket, { leave: 'after-101' })).socket.destroy();
    // A client that keeps its end open but sends a bad request: refused, and its sandbox ended
    // at once, not when the client lets go.
    const ended = () => auditText(gw).match(/ended: its run is over/g)?.length ?? 0;
    await until('no run sandbox still starting', () => sandboxesOnHost(gw).length <= 1);
    const before = ended();
    const held = await upgradeRun(socket, { leave: 'never', send: 'not json\n' });
    expect(held.refusal).toMatch(/the exec request is not JSON/);
    // Well before the 30 s after which the gateway cuts off a refused client that holds on.
    await until("the refused run's sandbox ended while its client holds on", () => ended() > before, 20_000);
    held.socket.destroy();
    expect(gw.child.exitCode).toBeNull();
    expect(gw.child.signalCode).toBeNull();
    expect(run(['--', 'sh', '-c', 'echo still']).stdout).toBe('still\n');
  });

  it('reads its stdin only as fast as the command does', async () => {
    // A sparse file far larger than any buffer on the way: the client's reads of it advance the
    // offset this process shares with it, which says how much it took in.
    const dir = mkdtempSync(join(tmpdir(), 'carapace-run-stdin-'));
    const big = join(dir, 'big');
    const size = 1024 * 2 ** 20;
    truncateSync(openAndClose(big), size);
    const fd = openSync(big, 'r');
    try {
      const r = spawnSync(process.execPath, [CLI, 'run', '--', 'sh', '-c', 'sleep 3; echo done'], {
        encoding: 'utf8',
        stdio: [fd, 'pipe', 'pipe'],
        env: { PATH: process.env.PATH, CARAPACE_HOME: gw.home },
        timeout: 60_000,
      });
      expect(r.stdout).toBe('done\n');
      expect(r.status).toBe(0);
      const pos = Number(/^pos:\s+(\d+)/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))![1]);
      expect(pos).toBeLessThan(64 * 2 ** 20);
    } finally {
      closeSync(fd);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("files a waiting sandbox's findings with the runs, not in a file of its own", async () => {
    const ran = run(['--', 'hostname']);
    expect(ran.status).toBe(0);
    // The sandbox for the next run started (and guarded) after this one ended, not just this
    // one's still being removed: a user added before it started would replace nothing it masks.
    const waiting = () => sandboxesOnHost(gw).filter((n) => n !== ran.stdout.trim());
    await until(
      'a sandbox waiting for the next run',
      () =>
        waiting().length === 1 &&
        auditText(gw).includes(`sandbox ${waiting()[0]} started for a carapace run`),
    );
    // Adding a host user replaces /etc/passwd, which every sandbox masks: a finding for each
    // (masked again, or, where the host's inotify limits left it unwatched, said to be lost).
    const user = makeUser('cprun');
    try {
      await until('the finding recorded', () => /mask-restored|mask-lost/.test(auditText(gw)));
    } finally {
      user.remove();
    }
    expect(readdirSync(join(gw.home, 'state', 'audit'))).toEqual(['runs.jsonl']);
  });

  it("removes a run's workspace without holding up the gateway", async () => {
    const files = 50_000;
    const r = run([
      '--',
      'sh',
      '-c',
      `mkdir /sandbox/many && cd /sandbox/many && seq 1 ${files} | xargs touch && hostname`,
    ]);
    expect(r.status).toBe(0);
    const many = join(gw.home, 'state', 'sandboxes', r.stdout.trim(), 'workspace', 'many');
    expect(await answeredWhileRemoving(gw, many, files)).toBe(true);
  });

  it("removes a deleted sandbox's workspace without holding up the gateway", async () => {
    const files = 50_000;
    const env = { PATH: process.env.PATH, CARAPACE_HOME: gw.home };
    const cli = (args: string[]) =>
      spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env, timeout: 120_000 });
    const script = `mkdir /sandbox/many && cd /sandbox/many && seq 1 ${files} | xargs touch && exec sleep 1000`;
    expect(cli(['sandbox', 'create', '--name', 'many', '--', 'sh', '-c', script]).status).toBe(0);
    const { workspace } = JSON.parse(cli(['sandbox', 'get', 'many', '-o', 'json']).stdout) as {
      workspace: string;
    };
    const many = join(workspace, 'many');
    const made = () => {
      try {
        return readdirSync(many).length === files;
      } catch {
        return false;
      }
    };
    await until('the files made', made, 120_000);
    const deleting = spawn(process.execPath, [CLI, 'sandbox', 'delete', 'many'], { env, stdio: 'ignore' });
    const exited = new Promise((resolve) => deleting.once('exit', resolve));
    expect(await answeredWhileRemoving(gw, many, files)).toBe(true);
    expect(await exited).toBe(0);
  });
});
