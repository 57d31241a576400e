/**
 * One gateway, many users (issue 12's acceptance): alice and bob, two real host users in the
 * carapace group, each reach the system gateway through their own socket; neither can list, get,
 * start, stop, log or delete the other's sandbox; root (an admin) can; a request that claims
 * another uid changes nothing; a user's quota refuses with one line.
 */
import { spawnSync } from 'node:child_process';
import { chownSync, mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI } from '../helpers/cli.js';
import { cliAs, makeUser, startTestGateway, type TestGateway, type TestUser } from '../helpers/gateway.js';
import { holds } from '../helpers/premises.js';

const reachable = () =>
  spawnSync(process.execPath, [CLI, '--version'], { uid: 65534, gid: 65534, encoding: 'utf8' }).status === 0;

describe.skipIf(!holds('root') || !reachable())('the system gateway and its users', () => {
  let gw: TestGateway;
  let alice: TestUser;
  let bob: TestUser;
  const as = (u: TestUser | null, args: string[]) => cliAs(gw.home, args, u?.uid ?? 0, u?.gid ?? 0);

  beforeAll(async () => {
    alice = makeUser('cpalice', ['carapace']);
    bob = makeUser('cpbob', ['carapace']);
    gw = await startTestGateway(['--max-sandboxes', '2']);
  });
  afterAll(async () => {
    await gw?.stop();
    alice?.remove();
    bob?.remove();
  });

  it('each user sees and acts on their own sandboxes only; root sees all', () => {
    expect(as(alice, ['sandbox', 'create', '--name', 'a1', '--', 'sleep', '300']).stdout).toBe(
      'a1 running\n',
    );
    expect(as(bob, ['sandbox', 'create', '--name', 'b1', '--', 'sleep', '300']).stdout).toBe('b1 running\n');

    const aliceList = JSON.parse(as(alice, ['sandbox', 'list', '-o', 'json']).stdout) as {
      name: string;
      owner: number;
    }[];
    expect(aliceList.map((s) => [s.name, s.owner])).toEqual([['a1', alice.uid]]);
    const bobList = JSON.parse(as(bob, ['sandbox', 'list', '-o', 'json']).stdout) as { name: string }[];
    expect(bobList.map((s) => s.name)).toEqual(['b1']);

    // Bob names alice's sandbox: it does not exist for him, whatever the operation.
    for (const args of [
      ['sandbox', 'get', 'a1'],
      ['sandbox', 'stop', 'a1'],
      ['sandbox', 'start', 'a1'],
      ['sandbox', 'restart', 'a1'],
      ['sandbox', 'logs', 'a1'],
      ['sandbox', 'exec', 'a1', '--', 'true'],
      ['sandbox', 'forward', 'a1', '20001'],
      ['sandbox', 'forward', 'a1', '--list'],
      ['sandbox', 'upload', 'a1', '/etc/hostname'],
      ['policy', 'get', 'a1'],
      ['sandbox', 'delete', 'a1'],
    ]) {
      const r = as(bob, args);
      expect(r.status, args.join(' ')).not.toBe(0);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(/no sandbox named "a1"/);
    }
    // Nor by claiming to be her.
    const claim = as(bob, ['sandbox', 'get', 'a1', '--owner', String(alice.uid)]);
    expect(claim.stderr).toMatch(/only root and members of carapace-admin/);
    expect(as(bob, ['sandbox', 'list', '--all']).stderr).toMatch(/only root and members of carapace-admin/);

    // Root, an admin, sees and acts on both.
    const all = JSON.parse(as(null, ['sandbox', 'list', '--all', '-o', 'json']).stdout) as { name: string }[];
    expect(all.map((s) => s.name).sort()).toEqual(['a1', 'b1']);
    expect(as(null, ['sandbox', 'get', 'a1', '--owner', String(alice.uid), '-o', 'json']).stdout).toContain(
      '"name": "a1"',
    );
    expect(as(null, ['sandbox', 'stop', 'b1', '--owner', String(bob.uid), '--grace', '1']).stdout).toBe(
      'b1 stopped\n',
    );

    // Alice's sandbox is untouched by all of bob's attempts.
    const a1 = JSON.parse(as(alice, ['sandbox', 'get', 'a1', '-o', 'json']).stdout) as { state: string };
    expect(a1.state).toBe('running');
  });

  it.skipIf(!holds('tmux'))('connect, in a terminal, reaches only the caller’s own sandbox', async () => {
    // In a real terminal (connect needs one): bob's connect to alice's a1 finds no such sandbox.
    const session = `cpusers${process.pid}`;
    const tmux = (...args: string[]) => spawnSync('tmux', args, { encoding: 'utf8' });
    const command = `su -s /bin/sh ${bob.name} -c 'CARAPACE_HOME=${gw.home} ${process.execPath} ${CLI} sandbox connect a1; echo exit-$?'; sleep 60`;
    expect(tmux('new-session', '-d', '-s', session, '-x', '100', '-y', '30', command).status).toBe(0);
    try {
      const screen = () => tmux('capture-pane', '-p', '-J', '-t', session).stdout;
      const end = Date.now() + 30_000;
      while (!/exit-\d+/.test(screen()) && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
      expect(screen()).toMatch(/no sandbox named "a1"[\s\S]*exit-3/);
    } finally {
      tmux('kill-session', '-t', session);
    }
    const a1 = JSON.parse(as(alice, ['sandbox', 'get', 'a1', '-o', 'json']).stdout) as { state: string };
    expect(a1.state).toBe('running');
  });

  it('a request that claims another uid in its body changes nothing', () => {
    const script = `
      const http = require('node:http');
      const body = JSON.stringify({ name: 'claimed', command: ['true'], owner: 0, ownerUid: ${alice.uid}, start: false });
      const req = http.request({ socketPath: process.argv[1], path: '/v1/sandboxes', method: 'POST',
        headers: { 'content-type': 'application/json', 'x-carapace-uid': '${alice.uid}' } }, (res) => {
        let t = ''; res.on('data', (d) => (t += d)); res.on('end', () => console.log(t));
      });
      req.end(body);`;
    const r = spawnSync(process.execPath, ['-e', script, `${gw.home}/run/users/${bob.uid}.sock`], {
      uid: bob.uid,
      gid: bob.gid,
      encoding: 'utf8',
    });
    expect(JSON.parse(r.stdout)).toMatchObject({ name: 'claimed', owner: bob.uid });
    expect(as(alice, ['sandbox', 'get', 'claimed']).stderr).toMatch(/no sandbox named "claimed"/);
    expect(as(bob, ['sandbox', 'delete', 'claimed']).status).toBe(0);
  });

  it('a user over their quota is refused in one line', () => {
    expect(as(alice, ['sandbox', 'create', '--name', 'a2', '--no-start', '--', 'true']).status).toBe(0);
    const over = as(alice, ['sandbox', 'create', '--name', 'a3', '--', 'true']);
    expect(over.status).not.toBe(0);
    expect(over.stderr.trim().split('\n')).toHaveLength(1);
    expect(over.stderr).toMatch(/you hold 2 sandboxes, the most one user may \(2\)/);
    expect(as(alice, ['sandbox', 'delete', 'a2']).status).toBe(0);
  });

  it('host paths a user names are checked as that user: root’s are refused, their own work', () => {
    // Bob's private directory (0700), reached directly and through a path of alice's.
    const secret = `/home/${bob.name}/private`;
    mkdirSync(secret, { mode: 0o700 });
    chownSync(secret, bob.uid, bob.gid);
    symlinkSync(secret, `/home/${alice.name}/link`);
    const refused = [
      ['--workspace', '/root/carapace-test-ws'],
      ['--mount', '/root:/r:ro'],
      ['--mount', `${secret}:/b:ro`],
      ['--mount', `/home/${alice.name}/link:/b:ro`],
      ['--workspace', `/home/${alice.name}/link`],
    ];
    for (const opt of refused) {
      const r = as(alice, ['sandbox', 'create', '--name', 'p1', ...opt, '--', 'true']);
      expect(r.status, opt.join(' ')).not.toBe(0);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(/is not yours to (read|write) \(checked as uid \d+\)/);
      // Nothing kept: the same create, corrected, is not refused as "already have".
      expect(as(alice, ['sandbox', 'get', 'p1']).stderr).toMatch(/no sandbox named "p1"/);
    }
    // Her own: a new workspace in her home, and a read-only mount of a directory of hers.
    const own = as(alice, [
      'sandbox',
      'create',
      '--name',
      'p2',
      '--workspace',
      `/home/${alice.name}/ws`,
      '--mount',
      `/home/${alice.name}:/home-ro:ro`,
      '--',
      'sh',
      '-c',
      'echo mine > /sandbox/f && ls /home-ro >/dev/null && sleep 300',
    ]);
    expect(own.stderr).toBe('');
    expect(own.stdout).toBe('p2 running\n');
    expect(as(alice, ['sandbox', 'delete', 'p2']).stdout).toMatch(
      /p2 deleted; workspace kept at \/home\/.*\/ws/,
    );
    // Handed back to her once the sandbox is gone.
    const st = spawnSync('stat', ['-c', '%u', `/home/${alice.name}/ws/f`], { encoding: 'utf8' });
    expect(Number(st.stdout.trim())).toBe(alice.uid);
  });

  it('a workspace refused to the user is never handed to them: not by the create, not by a delete', () => {
    // Root's directory (0700), with a file of root's: alice names it as her workspace.
    const rootDir = mkdtempSync(join(tmpdir(), 'carapace-root-ws-'));
    writeFileSync(join(rootDir, 'secret'), 'root only\n', { mode: 0o600 });
    try {
      const r = as(alice, ['sandbox', 'create', '--name', 'p3', '--workspace', rootDir, '--', 'true']);
      expect(r.status).not.toBe(0);
      expect(r.stderr).toMatch(/is not yours to write \(checked as uid \d+\)/);
      // Whatever is left of the create, its removal hands nothing of root's to her.
      as(alice, ['sandbox', 'delete', 'p3']);
      expect(statSync(rootDir).uid).toBe(0);
      expect(statSync(join(rootDir, 'secret')).uid).toBe(0);
    } finally {
      rmSync(rootDir, { recursive: true, force: true });
    }
  });

  it('deleting removes a sandbox for good; an admin may delete anyone’s', () => {
    expect(as(null, ['sandbox', 'delete', 'a1', '--owner', String(alice.uid)]).stdout).toBe('a1 deleted\n');
    expect(as(alice, ['sandbox', 'list', '-o', 'json']).stdout.trim()).toBe('[]');
    expect(as(bob, ['sandbox', 'delete', 'b1']).status).toBe(0);
  });
});
