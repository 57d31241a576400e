/**
 * Attacks by one user of a system gateway (root, many users over SO_PEERCRED) on what the gateway
 * does for them as root: a real gateway, real host users, the real CLI and raw API requests.
 *
 * A user may have the gateway do for them only what they could do themselves, or what the gateway's
 * rules give every user: a host port below 1024 is root's to bind, so root's gateway binds one for
 * root and carapace-admin only, whichever route asks (`sandbox create --forward` as well as
 * `sandbox forward`).
 */
import { spawnSync } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI } from '../helpers/cli.js';
import {
  cliAs,
  makeUser,
  startTestGateway,
  until,
  type TestGateway,
  type TestUser,
} from '../helpers/gateway.js';
import { holds } from '../helpers/premises.js';

const INSIDE = 8080;

const reachable = () =>
  spawnSync(process.execPath, [CLI, '--version'], { uid: 65534, gid: 65534, encoding: 'utf8' }).status === 0;

/** A privileged loopback port nothing listens on now (root may bind it; a user may not). */
async function freePrivilegedPort(): Promise<number> {
  for (let port = 1023; port > 900; port--) {
    const free = await new Promise<boolean>((resolve) => {
      const s = createServer();
      s.once('error', () => resolve(false));
      s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
    });
    if (free) return port;
  }
  throw new Error('no free port between 901 and 1023');
}

/** Whether something accepts connections on 127.0.0.1:port. */
function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const c = createConnection({ host: '127.0.0.1', port });
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
}

describe.skipIf(!holds('root') || !reachable())('a user of the system gateway, against root', () => {
  let gw: TestGateway;
  let mallory: TestUser;
  let victim: TestUser;
  let policy: string;
  const as = (u: TestUser | null, args: string[]) => cliAs(gw.home, args, u?.uid ?? 0, u?.gid ?? 0);

  beforeAll(async () => {
    mallory = makeUser('cpmal', ['carapace']);
    victim = makeUser('cpvic');
    gw = await startTestGateway();
    const dir = mkdtempSync(join(tmpdir(), 'carapace-gw-attacks-'));
    chmodSync(dir, 0o755);
    policy = join(dir, 'listening.yaml');
    writeFileSync(
      policy,
      `version: 1\nfilesystem_policy:\n  read_only: [/usr, /lib, /lib64, /bin, /etc]\n  read_write: [/sandbox, /tmp]\nlisten_ports: [${INSIDE}]\n`,
      { mode: 0o644 },
    );
  });
  afterAll(async () => {
    await gw?.stop();
    mallory?.remove();
    victim?.remove();
  });

  it('a privileged host port in sandbox create --forward: refused to a user as sandbox forward refuses it, nothing bound or kept', async () => {
    const port = await freePrivilegedPort();
    // Baseline: the user cannot bind it themselves.
    const own = spawnSync(
      process.execPath,
      [
        '-e',
        `require('node:net').createServer().listen(${port}, '127.0.0.1').on('error', (e) => { console.log(e.code); process.exit(0); })`,
      ],
      { uid: mallory.uid, gid: mallory.gid, encoding: 'utf8' },
    );
    expect(own.stdout.trim()).toBe('EACCES');

    for (const extra of [[], ['--no-start']]) {
      const r = as(mallory, [
        'sandbox',
        'create',
        '--name',
        'low',
        '--policy',
        policy,
        '--forward',
        `${port}:${INSIDE}`,
        ...extra,
        '--',
        'sleep',
        'infinity',
      ]);
      const what = `create ${extra.join(' ')} → ${r.status}: ${r.stdout}${r.stderr}`;
      const bound = await listening(port);
      // Undo what a gateway without the check did, so that the next case starts clean.
      if (r.status === 0) as(mallory, ['sandbox', 'delete', 'low']);
      expect(bound, what).toBe(false);
      expect(r.status, what).toBe(2);
      expect(r.stderr, what).toBe(
        `carapace: host port ${port} is privileged: forward a port of 1024 or above\n`,
      );
      expect(as(mallory, ['sandbox', 'list', '-o', 'json']).stdout.trim()).toBe('[]');
    }
    // The same as sandbox forward refuses it.
    expect(
      as(mallory, ['sandbox', 'create', '--name', 'low', '--policy', policy, '--', 'sleep', 'infinity'])
        .status,
    ).toBe(0);
    const added = as(mallory, ['sandbox', 'forward', 'low', `${port}:${INSIDE}`]);
    expect(added.stderr).toBe(`carapace: host port ${port} is privileged: forward a port of 1024 or above\n`);
    expect(await listening(port)).toBe(false);
    expect(as(mallory, ['sandbox', 'delete', 'low']).status).toBe(0);

    // Root, an admin, may.
    const root = as(null, [
      'sandbox',
      'create',
      '--name',
      'low',
      '--policy',
      policy,
      '--forward',
      `${port}:${INSIDE}`,
      '--',
      'sleep',
      'infinity',
    ]);
    expect(root.status, root.stderr).toBe(0);
    expect(await listening(port)).toBe(true);
    expect(as(null, ['sandbox', 'delete', 'low']).status).toBe(0);
  });

  it('a shared directory (world-writable, sticky: /tmp, /var/tmp, /dev/shm) as a workspace: refused, nothing of its files handed to the sandbox or back to the user', () => {
    // Like /tmp: root's, 1777, with a file of root's and a directory of another user's in it.
    const shared = mkdtempSync(join(tmpdir(), 'carapace-shared-'));
    chmodSync(shared, 0o1777);
    writeFileSync(join(shared, 'roots'), 'root only\n', { mode: 0o600 });
    mkdirSync(join(shared, 'theirs'), { mode: 0o700 });
    writeFileSync(join(shared, 'theirs', 'secret'), 'the victim only\n', { mode: 0o600 });
    chownSync(join(shared, 'theirs'), victim.uid, victim.gid);
    chownSync(join(shared, 'theirs', 'secret'), victim.uid, victim.gid);
    const owners = () =>
      [shared, join(shared, 'roots'), join(shared, 'theirs'), join(shared, 'theirs', 'secret')].map(
        (p) => `${statSync(p).uid}:${(statSync(p).mode & 0o7777).toString(8)}`,
      );
    const before = owners();
    expect(before).toEqual(['0:1777', '0:600', `${victim.uid}:700`, `${victim.uid}:600`]);
    try {
      // The user may write there (everyone may), but the directory and what is in it are not theirs.
      const r = as(mallory, [
        'sandbox',
        'create',
        '--name',
        'shared',
        '--workspace',
        shared,
        '--',
        'cat',
        '/sandbox/theirs/secret',
      ]);
      const after = owners();
      // Undo what a gateway without the check did: the delete hands the tree to the user.
      const del = as(mallory, ['sandbox', 'delete', 'shared']);
      const handedBack = owners();
      expect(after, `create → ${r.status}: ${r.stdout}${r.stderr}`).toEqual(before);
      expect(handedBack, `delete → ${del.status}: ${del.stdout}${del.stderr}`).toEqual(before);
      expect(r.status).toBe(2);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(/--workspace .* is not yours/);
    } finally {
      rmSync(shared, { recursive: true, force: true });
    }
  });

  it('a file of another user moved into the user’s own workspace: neither handed to the sandbox nor, at delete, to the user', () => {
    // Mallory's own directory, with the victim's file in it (moved there from a shared directory
    // without the sticky bit, say: a rename needs no right on the file itself).
    const ws = `/home/${mallory.name}/ws-moved`;
    mkdirSync(ws, { mode: 0o755 });
    chownSync(ws, mallory.uid, mallory.gid);
    writeFileSync(join(ws, 'mine'), 'mine\n', { mode: 0o644 });
    chownSync(join(ws, 'mine'), mallory.uid, mallory.gid);
    mkdirSync(join(ws, 'theirs'), { mode: 0o700 });
    writeFileSync(join(ws, 'theirs', 'secret'), 'the victim only\n', { mode: 0o600 });
    for (const p of ['theirs', 'theirs/secret']) chownSync(join(ws, p), victim.uid, victim.gid);
    const owners = () => ['mine', 'theirs', 'theirs/secret'].map((p) => statSync(join(ws, p)).uid);

    const r = as(mallory, [
      'sandbox',
      'create',
      '--name',
      'moved',
      '--workspace',
      ws,
      '--',
      'sleep',
      'infinity',
    ]);
    expect(r.stdout, r.stderr).toBe('moved running\n');
    const sandboxUid = statSync(ws).uid;
    expect(sandboxUid).not.toBe(mallory.uid);
    // Hers went to the sandbox; the victim's stayed the victim's.
    expect(owners()).toEqual([sandboxUid, victim.uid, victim.uid]);
    expect(as(mallory, ['sandbox', 'delete', 'moved']).status).toBe(0);
    expect(statSync(ws).uid).toBe(mallory.uid);
    expect(owners()).toEqual([mallory.uid, victim.uid, victim.uid]);
  });

  it('a host path the user cannot reach, listed read_only in their policy: never bound into their sandbox', async () => {
    // The victim's private directory (0700) with a file anyone could read, were they let in.
    const home = `/home/${victim.name}`;
    const priv = join(home, 'private');
    mkdirSync(priv, { mode: 0o700 });
    writeFileSync(join(priv, 'notes'), 'the victim only\n', { mode: 0o644 });
    for (const p of [priv, join(priv, 'notes')]) chownSync(p, victim.uid, victim.gid);
    chmodSync(home, 0o700);
    // Baseline: the user cannot read it on the host.
    const own = spawnSync('cat', [join(priv, 'notes')], {
      uid: mallory.uid,
      gid: mallory.gid,
      encoding: 'utf8',
    });
    expect(own.status).not.toBe(0);
    expect(own.stderr).toMatch(/Permission denied/);

    const dir = mkdtempSync(join(tmpdir(), 'carapace-gw-ro-'));
    chmodSync(dir, 0o755);
    const file = join(dir, 'reach.yaml');
    writeFileSync(
      file,
      `version: 1\nfilesystem_policy:\n  read_only: [/usr, /lib, /lib64, /bin, /etc, ${priv}]\n  read_write: [/sandbox, /tmp]\n`,
      { mode: 0o644 },
    );
    const r = as(mallory, [
      'sandbox',
      'create',
      '--name',
      'reach',
      '--policy',
      file,
      '--',
      'sh',
      '-c',
      `cat ${priv}/notes; echo exit=$?`,
    ]);
    let out = '';
    if (r.status === 0) {
      const end = Date.now() + 30_000;
      while (!/exit=/.test(out) && Date.now() < end) {
        out = as(mallory, ['sandbox', 'logs', 'reach']).stdout;
        await new Promise((res) => setTimeout(res, 200));
      }
      as(mallory, ['sandbox', 'delete', 'reach']);
    }
    expect(out, `create → ${r.status}: ${r.stdout}${r.stderr}`).not.toContain('the victim only');
    // Today bwrap, resolving the source as the sandbox's uid, refuses the start: said in its words.
    if (r.status !== 0) {
      expect(r.stderr).toMatch(/^carapace: the sandbox did not start: bwrap: .*Permission denied\n$/);
      expect(as(mallory, ['sandbox', 'list']).stdout).not.toContain('reach');
    }
  });

  it('the workspace the gateway made, kept at delete: what the sandbox wrote is handed to the user', () => {
    const r = as(mallory, [
      'sandbox',
      'create',
      '--name',
      'kept',
      '--',
      'sh',
      '-c',
      'mkdir -p /sandbox/d && echo mine > /sandbox/d/f && sleep infinity',
    ]);
    expect(r.stdout, r.stderr).toBe('kept running\n');
    let out = '';
    const end = Date.now() + 30_000;
    while (Date.now() < end) {
      out = as(mallory, ['sandbox', 'exec', 'kept', '--', 'cat', '/sandbox/d/f']).stdout;
      if (out === 'mine\n') break;
    }
    expect(out).toBe('mine\n');
    const del = as(mallory, ['sandbox', 'delete', 'kept', '--keep-workspace']);
    const kept = /workspace kept at (\S+)/.exec(del.stdout)?.[1];
    expect(kept, del.stdout + del.stderr).toBeDefined();
    expect([kept!, join(kept!, 'd'), join(kept!, 'd', 'f')].map((p) => statSync(p).uid)).toEqual([
      mallory.uid,
      mallory.uid,
      mallory.uid,
    ]);
    rmSync(join(kept!, '..'), { recursive: true, force: true });
  });

  it('the workspace the gateway made, kept at delete, is all that is kept: the read_write trees beside it (still the released uid’s) are removed', () => {
    const dir = mkdtempSync(join(tmpdir(), 'carapace-gw-keep-'));
    chmodSync(dir, 0o755);
    const withData = join(dir, 'data.yaml');
    writeFileSync(
      withData,
      'version: 1\nfilesystem_policy:\n  read_only: [/usr, /lib, /lib64, /bin, /etc]\n  read_write: [/sandbox, /tmp, /data]\n',
      { mode: 0o644 },
    );
    const r = as(mallory, [
      'sandbox',
      'create',
      '--name',
      'keepdata',
      '--policy',
      withData,
      '--',
      'sh',
      '-c',
      'echo w > /sandbox/w && echo secret > /data/s && chmod 644 /data/s && sleep infinity',
    ]);
    expect(r.stdout, r.stderr).toBe('keepdata running\n');
    let out = '';
    const end = Date.now() + 30_000;
    while (Date.now() < end) {
      out = as(mallory, ['sandbox', 'exec', 'keepdata', '--', 'cat', '/data/s']).stdout;
      if (out === 'secret\n') break;
    }
    expect(out).toBe('secret\n');
    const del = as(mallory, ['sandbox', 'delete', 'keepdata', '--keep-workspace']);
    const kept = /workspace kept at (\S+)/.exec(del.stdout)?.[1];
    expect(kept, del.stdout + del.stderr).toBeDefined();
    const storage = join(kept!, '..');
    expect(statSync(storage).uid).toBe(mallory.uid);
    expect(readdirSync(storage)).toEqual(['workspace']);
    expect(statSync(join(kept!, 'w')).uid).toBe(mallory.uid);
    rmSync(storage, { recursive: true, force: true });
    rmSync(dir, { recursive: true, force: true });
  });

  it('an admin removed from carapace-admin (still in carapace) loses the admin’s rights at once (socket and dashboard token), not at the next gateway start', async () => {
    const demoted = makeUser('cpdem', ['carapace', 'carapace-admin']);
    const joiner = makeUser('cpjoin');
    try {
      // Wait for the group watch to give both their sockets (demoted: an admin's).
      await until('the demoted user has a socket', () =>
        existsSync(`${gw.home}/run/users/${demoted.uid}.sock`),
      );
      expect(as(demoted, ['sandbox', 'list', '--all']).status).toBe(0);
      // And a dashboard token, made while an admin.
      const url = /http:\/\/127\.0\.0\.1:\d+\/\?token=\S+/.exec(as(demoted, ['dashboard']).stdout)?.[0];
      expect(url).toBeDefined();
      const api = (u: string) => u.replace('/?token=', '/api/sandboxes?token=');
      expect((await fetch(api(url!))).status).toBe(200);
      // Demoted leaves carapace-admin; then joiner enters carapace (the groups' own tool, locking
      // the file as useradd does): a refresh that sees the joiner has seen the demotion too.
      expect(spawnSync('gpasswd', ['-d', demoted.name, 'carapace-admin'], { encoding: 'utf8' }).status).toBe(
        0,
      );
      expect(spawnSync('gpasswd', ['-a', joiner.name, 'carapace'], { encoding: 'utf8' }).status).toBe(0);
      // The joiner's socket says the gateway has read the new group file.
      await until('the joiner has a socket', () => existsSync(`${gw.home}/run/users/${joiner.uid}.sock`));
      const r = as(demoted, ['sandbox', 'list', '--all']);
      expect(r.status, r.stdout).not.toBe(0);
      expect(r.stderr).toMatch(/only root and members of carapace-admin/);
      expect(as(demoted, ['sandbox', 'list']).status).toBe(0);
      // The token made with the admin's rights is gone with them; a new one has the user's.
      expect((await fetch(api(url!))).status).toBe(401);
      const again = /http:\/\/127\.0\.0\.1:\d+\/\?token=\S+/.exec(as(demoted, ['dashboard']).stdout)?.[0];
      expect(again).not.toBe(url);
      expect((await fetch(api(again!))).status).toBe(200);
    } finally {
      demoted.remove();
      joiner.remove();
    }
  });
});
