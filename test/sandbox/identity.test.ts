/**
 * The host's sandbox uid registry (src/sandbox/identity/identity.ts) on its own: what it reads is
 * validated, changes from many processes at once never hand out one uid twice, and a uid is freed
 * only once nothing of it is left at its paths' roots.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import {
  chownSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { IdentityError, IdentityRegistry } from '../../src/sandbox/identity/identity.js';
import { requires } from '../helpers/premises.js';

const BASE = 4_000_000;
const registryIn = (dir: string) => new IdentityRegistry({ dir, base: BASE, size: 1000 });
const fresh = () => mkdtempSync(join(tmpdir(), 'carapace-uids-'));
const owner = (name: string) => ({ state: '/var/lib/carapace-test', name });

async function rejectsWith(p: Promise<unknown>, code: string, message: RegExp): Promise<void> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(IdentityError);
  expect((err as IdentityError).code).toBe(code);
  expect((err as Error).message).toMatch(message);
}

describe('the uid registry', () => {
  it('refuses a record outside the range, below 1000, twice recorded, or a file that is not its own', async () => {
    const cases: [string, unknown, RegExp][] = [
      ['uid 0', { uid: 0 }, /uid 0 is outside the range/],
      ['a host user', { uid: 1001 }, /uid 1001 is outside the range/],
      ['above the range', { uid: BASE + 1000 }, /outside the range/],
      ['a relative path', { paths: ['ws'] }, /invalid paths/],
    ];
    for (const [, patch, message] of cases) {
      const dir = fresh();
      const rec = { uid: BASE, state: '/s', name: 'a', paths: ['/s/ws'], since: 'x', ...(patch as object) };
      writeFileSync(
        join(dir, 'registry.json'),
        JSON.stringify({ version: 1, base: BASE, size: 1000, next: BASE, records: [rec] }),
      );
      await rejectsWith(registryIn(dir).acquire(owner('b'), []), 'UID_REGISTRY_INVALID', message);
    }
    const twice = fresh();
    const rec = { uid: BASE, state: '/s', name: 'a', paths: [], since: 'x' };
    writeFileSync(
      join(twice, 'registry.json'),
      JSON.stringify({
        version: 1,
        base: BASE,
        size: 1000,
        next: BASE,
        records: [rec, { ...rec, name: 'b' }],
      }),
    );
    await rejectsWith(registryIn(twice).acquire(owner('c'), []), 'UID_REGISTRY_INVALID', /recorded twice/);
    const garbage = fresh();
    writeFileSync(join(garbage, 'registry.json'), '{"version": 1, "records": [');
    await rejectsWith(registryIn(garbage).acquire(owner('c'), []), 'UID_REGISTRY_INVALID', /not JSON/);
    const otherRange = fresh();
    await registryIn(otherRange).acquire(owner('a'), []);
    await rejectsWith(
      new IdentityRegistry({ dir: otherRange, base: BASE + 5000, size: 1000 }).acquire(owner('a'), []),
      'UID_REGISTRY_INVALID',
      /was made for uids 4000000-4000999/,
    );
  });

  it('hands out distinct uids to many processes changing it at once', async () => {
    const dir = fresh();
    const script = `
      import { IdentityRegistry } from ${JSON.stringify(join(import.meta.dirname, '../../dist/src/sandbox/identity/identity.js'))};
      const r = new IdentityRegistry({ dir: process.argv[1], base: ${BASE}, size: 1000 });
      const ids = [];
      for (let i = 0; i < 10; i++) ids.push((await r.acquire({ state: '/s', name: 'p' + process.pid + '-' + i }, [])).uid);
      console.log(JSON.stringify(ids));`;
    const runs = Array.from({ length: 6 }, () => {
      const child = spawn(process.execPath, ['--input-type=module', '-e', script, dir], {
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += String(d)));
      return new Promise<number[]>((resolve) =>
        child.on('close', () => resolve(JSON.parse(out) as number[])),
      );
    });
    const uids = (await Promise.all(runs)).flat();
    expect(uids).toHaveLength(60);
    expect(new Set(uids).size).toBe(60);
    expect(registryIn(dir).records()).toHaveLength(60);
  });

  it('allocates monotonically: a released uid is not the next one handed out', async () => {
    const r = registryIn(fresh());
    const a = await r.acquire(owner('a'), []);
    expect(await r.release(owner('a'))).toBe(true);
    const b = await r.acquire(owner('b'), []);
    expect(b.uid).toBe(a.uid + 1);
  });

  it('flushes a fence 64 uids ahead, moves it only when an allocation reaches it, and resumes there after a reboot', async () => {
    const dir = fresh();
    const file = join(dir, 'registry.json');
    const read = () =>
      JSON.parse(readFileSync(file, 'utf8')) as { next: number; fence: number; boot: string };
    // This boot's id, as the test says it (the kernel's boot_id is a premise this test does not need).
    const boot = 'this-boot';
    const r = new IdentityRegistry({ dir, base: BASE, size: 1000, bootId: () => boot });
    expect((await r.acquire(owner('a'), [])).uid).toBe(BASE);
    expect(read()).toMatchObject({ next: BASE + 1, fence: BASE + 65, boot });
    for (const name of ['b', 'c']) await r.acquire(owner(name), []);
    expect(read()).toMatchObject({ next: BASE + 3, fence: BASE + 65 }); // within it: not moved
    // The last uid before the fence leaves it; the fence's own uid moves it on.
    const write = (patch: object) =>
      writeFileSync(file, JSON.stringify({ ...read(), records: [], ...patch }));
    write({ next: BASE + 64 });
    expect((await r.acquire(owner('d'), [])).uid).toBe(BASE + 64);
    expect(read().fence).toBe(BASE + 65);
    expect((await r.acquire(owner('e'), [])).uid).toBe(BASE + 65);
    expect(read().fence).toBe(BASE + 130);
    // Round the end of the range, the fence wraps with the cursor.
    write({ next: BASE + 999, fence: BASE + 999 });
    expect((await r.acquire(owner('f'), [])).uid).toBe(BASE + 999);
    expect(read()).toMatchObject({ next: BASE, fence: BASE + 64 });
    // Written in another boot (a power cut may have lost writes after the fence's): past the fence.
    write({ next: BASE + 10, fence: BASE + 40, boot: 'an-earlier-boot' });
    expect((await r.acquire(owner('g'), [])).uid).toBe(BASE + 40);
    expect(read()).toMatchObject({ next: BASE + 41, fence: BASE + 105, boot });
    // Where this boot's id cannot be read, a file from a boot that had one still resumes at its
    // fence, and every allocation is flushed from then on.
    const noBootId = new IdentityRegistry({ dir, base: BASE, size: 1000, bootId: () => '' });
    write({ next: BASE + 10, fence: BASE + 40, boot });
    expect((await noBootId.acquire(owner('g2'), [])).uid).toBe(BASE + 40);
    expect(read()).toMatchObject({ next: BASE + 41, fence: BASE + 105, boot: '' });
    // A fence outside the range is refused like any other bad value.
    write({ fence: BASE + 1000 });
    await rejectsWith(r.acquire(owner('h'), []), 'UID_REGISTRY_INVALID', /fence 4001000 is outside/);
  });

  it('writes generations behind a link: the last durable one stays, an earlier regular file is taken over', async () => {
    const dir = fresh();
    const file = join(dir, 'registry.json');
    // An earlier Carapace's registry: a regular file, read as it is.
    writeFileSync(file, JSON.stringify({ version: 1, base: BASE, size: 1000, next: BASE + 7, records: [] }));
    const r = new IdentityRegistry({ dir, base: BASE, size: 1000, bootId: () => 'this-boot' });
    expect((await r.acquire(owner('a'), [])).uid).toBe(BASE + 7); // no fence yet: flushed
    expect(readlinkSync(file)).toBe('registry.1.durable.json');
    await r.acquire(owner('b'), []);
    await r.acquire(owner('c'), []);
    // The generation in force and the durable one a lost write falls back to; nothing else.
    expect(readlinkSync(file)).toBe('registry.3.json');
    expect(readdirSync(dir).sort()).toEqual(['registry.1.durable.json', 'registry.3.json', 'registry.json']);
    expect(r.records().map((x) => x.name)).toEqual(['a', 'b', 'c']);
  });

  it('reads a generation a power cut emptied as the last durable one, resuming at its fence, only after a reboot', async () => {
    const dir = fresh();
    let boot = 'before-the-cut';
    const r = new IdentityRegistry({ dir, base: BASE, size: 1000, bootId: () => boot });
    await r.acquire(owner('a'), []); // durable: the fence is BASE + 65
    for (const name of ['b', 'c']) await r.acquire(owner(name), []);
    const current = join(dir, readlinkSync(join(dir, 'registry.json')));
    // What ext4 may leave of a write whose blocks were never allocated: an empty file.
    writeFileSync(current, '');
    // In the same boot that is no power cut: every allocation stops.
    await rejectsWith(r.acquire(owner('d'), []), 'UID_REGISTRY_INVALID', /is not valid \(empty\)/);
    boot = 'after-the-cut';
    // b and c are lost with the write; the cursor goes past every uid the lost writes could have
    // handed out.
    expect((await r.acquire(owner('d'), [])).uid).toBe(BASE + 65);
    expect(r.records().map((x) => x.name)).toEqual(['a', 'd']);
  });

  it('trusts no generation file once an earlier Carapace wrote the registry as a regular file (an upgrade in progress)', async () => {
    const dir = fresh();
    const file = join(dir, 'registry.json');
    let boot = 'before-the-cut';
    const r = new IdentityRegistry({ dir, base: BASE, size: 1000, bootId: () => boot });
    await r.acquire(owner('a'), []); // durable: registry.1.durable.json, fence BASE + 65
    // An earlier Carapace (an old gateway during an upgrade) writes as it always did: a regular
    // file renamed over the link, having handed out far past the fence above.
    const records = Array.from({ length: 100 }, (_, i) => ({ name: `old-${i}`, uid: BASE + 1 + i }));
    const old = {
      ...JSON.parse(readFileSync(join(dir, 'registry.1.durable.json'), 'utf8')),
      next: BASE + 101,
    };
    unlinkSync(file);
    writeFileSync(file, JSON.stringify({ ...old, records: [...old.records, ...records] }));
    // Then a power cut empties its write. The stale durable generation must not be read instead:
    // it would hand out uids the old records hold.
    writeFileSync(file, '');
    boot = 'after-the-cut';
    await rejectsWith(r.acquire(owner('b'), []), 'UID_REGISTRY_INVALID', /is not valid \(empty\)/);
    // And the next write of a registry found as a regular file leaves no stale generation behind.
    writeFileSync(file, JSON.stringify(old));
    await r.acquire(owner('c'), []);
    expect(readdirSync(dir).filter((n) => n !== 'registry.json' && !n.startsWith('.'))).toEqual([
      readlinkSync(file),
    ]);
  });

  it('never reads a link to a generation that is gone as an empty registry', async () => {
    const dir = fresh();
    symlinkSync('registry.9.json', join(dir, 'registry.json'));
    await rejectsWith(
      registryIn(dir).acquire(owner('a'), []),
      'UID_REGISTRY_INVALID',
      /names a file that does not exist/,
    );
  });

  it('keeps a uid while its workspace still belongs to it, and frees it once the workspace is gone or handed on', async (ctx) => {
    requires(ctx, 'root'); // chown to the sandbox uid
    const r = registryIn(fresh());
    const ws = join(fresh(), 'ws');
    mkdirSync(ws);
    const a = await r.acquire(owner('a'), [ws]);
    chownSync(ws, a.uid, a.gid);
    expect(await r.release(owner('a'))).toBe(false);
    expect(r.records()).toEqual([
      expect.objectContaining({ uid: a.uid, name: expect.stringMatching(/^released\./) as unknown }),
    ]);
    // An unnamed run on the same workspace takes the uid over instead of handing the tree on.
    const again = await r.acquire(owner('b'), [ws], ws);
    expect(again.uid).toBe(a.uid);
    expect(await r.release(owner('b'))).toBe(false);
    // Handed to another uid: the old record holds nothing and is dropped at the next change.
    chownSync(ws, a.uid + 500, a.uid + 500);
    await r.acquire(owner('c'), []);
    expect(r.records().map((x) => x.name)).toEqual(['c']);
    rmSync(ws, { recursive: true });
  });

  it("drops a record whose owner's state directory is gone, once it is ten minutes old, its paths hold nothing and nothing runs as it", async (ctx) => {
    requires(ctx, 'root'); // a process of the sandbox uid
    const dir = fresh();
    const state = fresh(); // an owner that exists
    const gone = join(tmpdir(), 'carapace-uids-gone-for-good');
    const longAgo = new Date(Date.now() - 11 * 60 * 1000).toISOString(); // older than ten minutes
    const record = (uid: number, owner: string, name: string, since: string) => ({
      uid,
      state: owner,
      name,
      paths: [join(owner, 'sandboxes', name)],
      since,
    });
    writeFileSync(
      join(dir, 'registry.json'),
      JSON.stringify({
        version: 1,
        base: BASE,
        size: 1000,
        next: BASE + 4,
        records: [
          record(BASE, gone, 'orphan', longAgo), // its home removed without deleting it
          record(BASE + 1, gone, 'starting', new Date().toISOString()), // its start may be under way
          record(BASE + 2, state, 'kept', longAgo), // its owner is still there
          record(BASE + 3, gone, 'running', longAgo), // a sandbox of a removed home, still running
        ],
      }),
    );
    const sandbox = spawn('sleep', ['60'], { uid: BASE + 3, gid: BASE + 3, stdio: 'ignore' });
    await once(sandbox, 'spawn');
    try {
      const r = registryIn(dir);
      await r.acquire(owner('new'), []);
      expect(r.records().map((x) => x.name)).toEqual(['starting', 'kept', 'running', 'new']);
    } finally {
      sandbox.kill('SIGKILL');
    }
  });
});
