/**
 * `carapace run` through the gateway counts against its user's quotas as a created sandbox does
 * (src/gateway/sandboxes/quotas.ts): a run's sandbox gets the gateway's --default-memory (at most
 * what the user has left), a user at their limit is refused a run with QUOTA_EXCEEDED, and a run
 * in progress counts towards the sandboxes and memory a `sandbox create` is checked against.
 * What a run gives its command is test/gateway/run.test.ts's.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, readFileSync, symlinkSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, freshHome, REPO } from '../helpers/cli.js';
import { cliAs, makeUser, startTestGateway, type TestGateway, type TestUser } from '../helpers/gateway.js';
import { holds } from '../helpers/premises.js';

const reachable = () =>
  spawnSync(process.execPath, [CLI, '--version'], { uid: 65534, gid: 65534, encoding: 'utf8' }).status === 0;

const MiB = 2 ** 20;

/** Both clients a user may run: the Node CLI, and the native front on PATH (native/carapace). */
const CLIENTS: [string, string[]][] = [
  ['the Node CLI', [process.execPath, CLI]],
  ['the native front on PATH', [join(REPO, 'native', 'carapace')]],
];

const DECLINED = /^carapace: the gateway declined the run \((.*)\): running it in this process$/;

interface AuditLine {
  message?: string;
  unmapped?: { owner?: number; limits?: { applied: string[]; skipped: string[] } };
}

/** The events of every run, from `<state>/audit/runs.jsonl`. */
function runEvents(gw: TestGateway): AuditLine[] {
  let text = '';
  try {
    text = readFileSync(join(gw.home, 'state', 'audit', 'runs.jsonl'), 'utf8');
  } catch {
    return [];
  }
  return text
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as AuditLine);
}

/** The limits of the sandboxes started for runs of `uid`, in order. */
function runLimits(gw: TestGateway, uid: number): { applied: string[]; skipped: string[] }[] {
  return runEvents(gw)
    .filter((e) => e.message?.endsWith(`started for a carapace run of uid ${uid}`))
    .map((e) => e.unmapped!.limits!);
}

/** A raw `GET /v1/runs` on `socket`: the status line and body of a refusal, or '101' when served. */
function askForRun(socket: string): Promise<{ status: string; body: string }> {
  return new Promise((resolve, reject) => {
    const s = connect(socket);
    let got = '';
    s.on('error', reject);
    s.on('data', (d: Buffer) => {
      got += String(d);
      const end = got.indexOf('\r\n\r\n');
      if (end < 0) return;
      const status = got.slice(9, 12);
      if (status === '101') {
        s.destroy();
        return resolve({ status, body: '' });
      }
      const length = Number(/content-length: (\d+)/i.exec(got)?.[1] ?? 0);
      if (Buffer.byteLength(got.slice(end + 4)) < length) return;
      s.destroy();
      resolve({ status, body: got.slice(end + 4) });
    });
    s.write(
      'GET /v1/runs HTTP/1.1\r\nHost: carapace\r\nConnection: Upgrade\r\nUpgrade: carapace-stream\r\n\r\n',
    );
  });
}

async function until(what: string, check: () => boolean, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`still not so after ${ms / 1000} s: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe.skipIf(!holds('root') || !reachable())("carapace run and its user's quotas", () => {
  let gw: TestGateway;
  let alice: TestUser;
  const as = (args: string[]) => cliAs(gw.home, args, alice.uid, alice.gid);
  const socket = () => join(gw.home, 'run', 'users', `${alice.uid}.sock`);
  /** A run of alice's that holds its sandbox until killed; resolves once its command runs. */
  const holdingRun = async (): Promise<ChildProcess> => {
    const child = spawn(process.execPath, [CLI, 'run', '--', 'sh', '-c', 'echo started; exec sleep 600'], {
      env: { PATH: process.env.PATH, CARAPACE_HOME: gw.home },
      cwd: '/',
      uid: alice.uid,
      gid: alice.gid,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    await new Promise<void>((resolve) => child.stdout!.once('data', () => resolve()));
    return child;
  };
  const kill = async (child: ChildProcess) => {
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
  };

  /**
   * A CARAPACE_HOME of alice's: a run in her own process needs state of her own (the gateway's is
   * root's). `gateway`, her socket on the test's gateway, is linked in where she would find it.
   */
  const homeOfAlice = (gateway: string | null) => {
    const home = freshHome();
    mkdirSync(join(home, 'run', 'users'), { recursive: true });
    for (const d of [home, join(home, 'run'), join(home, 'run', 'users')]) {
      chownSync(d, alice.uid, alice.gid);
      chmodSync(d, 0o711);
    }
    if (gateway !== null) symlinkSync(gateway, join(home, 'run', 'users', `${alice.uid}.sock`));
    return home;
  };

  beforeAll(async () => {
    alice = makeUser('cpquota', ['carapace']);
    gw = await startTestGateway([
      '--max-sandboxes',
      '2',
      '--max-memory',
      '512Mi',
      '--default-memory',
      '384Mi',
    ]);
  });
  afterAll(async () => {
    await gw?.stop();
    alice?.remove();
  });

  it("gives a user's run the gateway's default memory limit, at most what the user has left", () => {
    expect(as(['run', '--', 'true']).status).toBe(0);
    expect(runLimits(gw, alice.uid).at(-1)?.applied).toContainEqual(
      expect.stringMatching(new RegExp(`^memory: v[12] ${384 * MiB} bytes$`)),
    );
    // A created sandbox takes 384Mi of the 512Mi: the next run gets the 128Mi left.
    expect(as(['sandbox', 'create', '--name', 'q1', '--no-start', '--', 'true']).status).toBe(0);
    expect(as(['run', '--', 'true']).status).toBe(0);
    expect(runLimits(gw, alice.uid).at(-1)?.applied).toContainEqual(
      expect.stringMatching(new RegExp(`^memory: v[12] ${128 * MiB} bytes$`)),
    );
    expect(as(['sandbox', 'delete', 'q1']).status).toBe(0);
  });

  it('refuses a run of a user at their limit with QUOTA_EXCEEDED, as a create is refused', async () => {
    expect(as(['sandbox', 'create', '--name', 'q1', '--no-start', '--', 'true']).status).toBe(0);
    expect(as(['sandbox', 'create', '--name', 'q2', '--no-start', '--', 'true']).status).toBe(0);
    const refused = await askForRun(socket());
    expect(refused.status).toBe('429');
    expect(JSON.parse(refused.body)).toMatchObject({
      error: { code: 'QUOTA_EXCEEDED', message: expect.stringMatching(/you hold 2 sandboxes/) },
    });
    // Memory too: one sandbox whose limit takes all of it leaves no room for a run.
    expect(as(['sandbox', 'delete', 'q2']).status).toBe(0);
    expect(as(['sandbox', 'delete', 'q1']).status).toBe(0);
    const policy = join(`/home/${alice.name}`, 'big.yaml');
    spawnSync('sh', ['-c', `printf 'version: 1\\nlimits:\\n  memory: 512Mi\\n' > ${policy}`]);
    const big = as(['sandbox', 'create', '--name', 'big', '--policy', policy, '--no-start', '--', 'true']);
    expect(big.stderr).toBe('');
    const noMemory = await askForRun(socket());
    expect(noMemory.status).toBe('429');
    expect(JSON.parse(noMemory.body)).toMatchObject({
      error: {
        code: 'QUOTA_EXCEEDED',
        message: expect.stringMatching(/memory limits add up to 0\.5 GiB of the 0\.5 GiB/),
      },
    });
    expect(as(['sandbox', 'delete', 'big']).status).toBe(0);
  });

  /**
   * A declined run runs in the client's own process (docs/gateway.md), and says so once, with the
   * gateway's reason: the native front hands the run to the Node CLI without a word, which asks
   * again and says it. No gateway at all is not a decline: nothing is said.
   */
  it.each(CLIENTS)(
    'a run declined for a user at their limit runs in its own process, said once: %s',
    (_, client) => {
      const [file, ...pre] = client as [string, ...string[]];
      const run = (home: string) =>
        spawnSync(file, [...pre, 'run', '--', 'sh', '-c', 'echo ran'], {
          encoding: 'utf8',
          cwd: '/',
          env: { PATH: process.env.PATH, CARAPACE_HOME: home, LANG: 'C.UTF-8' },
          uid: alice.uid,
          gid: alice.gid,
          timeout: 120_000,
        });
      expect(as(['sandbox', 'create', '--name', 'q1', '--no-start', '--', 'true']).status).toBe(0);
      expect(as(['sandbox', 'create', '--name', 'q2', '--no-start', '--', 'true']).status).toBe(0);
      try {
        const before = runEvents(gw).length;
        const r = run(homeOfAlice(socket()));
        expect({ status: r.status, stdout: r.stdout }).toEqual({ status: 0, stdout: 'ran\n' });
        const said = r.stderr.split('\n').filter((l) => l.includes('declined'));
        expect(said).toEqual([expect.stringMatching(DECLINED)]);
        expect(DECLINED.exec(said[0]!)![1]).toMatch(/you hold 2 sandboxes/);
        // Not the gateway's run: nothing of it in the runs' audit.
        expect(
          runEvents(gw)
            .slice(before)
            .filter((e) => e.message?.includes('run by uid')),
        ).toEqual([]);
      } finally {
        expect(as(['sandbox', 'delete', 'q2']).status).toBe(0);
        expect(as(['sandbox', 'delete', 'q1']).status).toBe(0);
      }
      const none = run(homeOfAlice(null));
      expect({ status: none.status, stdout: none.stdout }).toEqual({ status: 0, stdout: 'ran\n' });
      expect(none.stderr).not.toMatch(/declined/);
    },
  );

  it('counts a run in progress against the sandboxes and memory a create is checked against', async () => {
    const first = await holdingRun();
    const second = await holdingRun();
    try {
      // Two runs of 384Mi and 128Mi: no sandbox left, and no memory.
      const over = as(['sandbox', 'create', '--name', 'q3', '--no-start', '--', 'true']);
      expect(over.status).not.toBe(0);
      expect(over.stderr.trim().split('\n')).toHaveLength(1);
      expect(over.stderr).toMatch(
        /you hold 2 sandboxes \(2 of them carapace runs\), the most one user may \(2\)/,
      );
    } finally {
      await kill(second);
    }
    // Once a run is over, what it held is the user's again.
    await until('the ended run no longer counted', () => {
      const r = as(['sandbox', 'create', '--name', 'q3', '--no-start', '--', 'true']);
      return r.status === 0;
    });
    await kill(first);
    expect(as(['sandbox', 'delete', 'q3']).status).toBe(0);
  });
});
