/**
 * The host replaces a masked file while a sandbox runs (docs/security.md, "A host file replaced
 * while a sandbox runs"). The masks over /etc/shadow, the synthesized /etc/passwd and the like are
 * binds on the host's names; a rename over one (useradd, passwd, a package upgrade) detaches the
 * bind in every other namespace, and without the guard the sandbox reads the host's new file from
 * then on. The guard (src/sandbox/mounts/mask-guard.ts, native/carapace-mask.c) binds it again and says so
 * in the audit trail: as root, rootless, and for a sandbox a restarted gateway takes over.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { BubblewrapDriver } from '../../src/runtime/bubblewrap-driver.js';
import { hostIdentities } from '../../src/sandbox/identity/identity.js';
import type { MaskCheck } from '../../src/sandbox/mounts/mask-guard.js';
import { SandboxControl } from '../../src/sandbox/control/control.js';
import { stateDirs } from '../../src/sandbox/state-dirs.js';
import { CLI, freshHome, REPO } from '../helpers/cli.js';
import { hostUserCommand } from '../helpers/host-users.js';
import { hostTree, replaceOnHost, restoredWithin, runStarter, writeStarter } from '../helpers/mask-guard.js';
import { requires } from '../helpers/premises.js';
import { readAudit, sharedTempDir, startInSandbox } from '../helpers/sandbox.js';
import { run, startHeld, type HeldSandbox } from '../sandbox/control-helpers.js';

let held: HeldSandbox | undefined;
afterEach(async () => {
  if (held) {
    held.started.process.signal('SIGKILL');
    await held.started.process.exited;
    await held.started.cleanup();
  }
  held = undefined;
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('a host file replaced while the sandbox runs', () => {
  it('useradd on the host during `carapace run`: the agent keeps its passwd and shadow mask, and the audit says so', async (ctx) => {
    requires(ctx, 'root');
    if (spawnSync('useradd', ['--help']).status !== 0) ctx.skip('needs useradd (the passwd package)');
    const ws = sharedTempDir();
    const audit = join(sharedTempDir(), 'audit.jsonl');
    // The agent waits for the test's word, then reads what the host replaced.
    const agent = startInSandbox(
      [
        'sh',
        '-c',
        'echo ready; while [ ! -e /sandbox/go ]; do sleep 0.05; done; cat /etc/passwd; cat /etc/shadow',
      ],
      ['--workspace', ws, '--audit', audit],
    );
    await agent.waitForStdout('ready');
    const user = `cmk${process.pid % 100000}`;
    // useradd writes passwd+, group+, shadow+, gshadow+ and renames each over the old name.
    const made = hostUserCommand('useradd', ['--no-create-home', user]);
    try {
      expect(made.status, made.stderr).toBe(0);
      expect(readFileSync('/etc/passwd', 'utf8')).toContain(`${user}:`);
      const restored = () =>
        readAudit(audit)
          .filter((e) => e.class_uid === 2004 && JSON.stringify(e).includes('mask-restored'))
          .flatMap((e) => (e.unmapped.restored as string[] | undefined) ?? []);
      const deadline = Date.now() + 10_000;
      while (!restored().includes('/etc/shadow') && Date.now() < deadline) await sleep(20);
      expect(restored()).toEqual(expect.arrayContaining(['/etc/passwd', '/etc/group', '/etc/shadow']));
      writeFileSync(join(ws, 'go'), '');
      const r = await agent.result;
      expect(r.stdout).toContain('sandbox:x:1000:1000');
      expect(r.stdout).not.toContain(`${user}:`);
      expect(r.stdout).not.toMatch(/^daemon:/m);
      // The shadow file is still the unreadable mask (empty, mode 0), not the host's.
      expect(r.stderr).toMatch(/cat: \/etc\/shadow: Permission denied/);
      const lost = readAudit(audit).filter((e) => JSON.stringify(e).includes('mask-lost'));
      expect(lost.map((e) => e.message)).toEqual([]);
    } finally {
      hostUserCommand('userdel', [user]);
      agent.child.kill('SIGKILL');
    }
  });

  it('a file the policy lists from a host tree: masked again after each rename, the new file never stays', async (ctx) => {
    requires(ctx, 'root');
    const { dir, policy } = hostTree();
    const conf = join(dir, 'conf');
    const checks: MaskCheck[] = [];
    held = await startHeld(['sleep', '600'], {
      policy,
      files: [{ path: conf, content: 'the sandbox\n' }],
      onMaskCheck: (c) => checks.push(c),
    });
    const cat = async () => (await run(held!.started.control!.exec({ argv: ['cat', conf] }))).stdout;
    expect(await cat()).toBe('the sandbox\n');
    for (const round of [1, 2]) {
      const before = checks.length;
      replaceOnHost(conf, `the host, replaced ${round}\n`);
      expect(await restoredWithin(checks, conf, 10_000, before)).not.toBeNull();
      expect(await cat()).toBe('the sandbox\n');
    }
  });

  it('a directory on the way to a mask replaced (as `ssh-keygen -A` into a new /etc/ssh would): masked again, and watched in the new directory', async (ctx) => {
    requires(ctx, 'root');
    const { dir, policy } = hostTree();
    mkdirSync(join(dir, 'sub'), { mode: 0o755 });
    const conf = join(dir, 'sub', 'conf');
    writeFileSync(conf, 'the host\n', { mode: 0o644 });
    const checks: MaskCheck[] = [];
    held = await startHeld(['sleep', '600'], {
      policy,
      files: [{ path: conf, content: 'the sandbox\n' }],
      onMaskCheck: (c) => checks.push(c),
    });
    const cat = async () => (await run(held!.started.control!.exec({ argv: ['cat', conf] }))).stdout;
    expect(await cat()).toBe('the sandbox\n');
    // The directory goes and a new one takes its name: the mask stays on the old one's file.
    renameSync(join(dir, 'sub'), join(dir, 'sub.old'));
    mkdirSync(join(dir, 'sub'), { mode: 0o755 });
    let before = checks.length;
    replaceOnHost(conf, 'the host, in the new directory\n');
    expect(await restoredWithin(checks, conf, 10_000, before)).not.toBeNull();
    expect(await cat()).toBe('the sandbox\n');
    // And a rename inside the new directory is seen too.
    before = checks.length;
    replaceOnHost(conf, 'the host, replaced again\n');
    expect(await restoredWithin(checks, conf, 10_000, before)).not.toBeNull();
    expect(await cat()).toBe('the sandbox\n');
  });

  it('rootless: the user who started it binds the mask again in the sandbox it owns', async (ctx) => {
    requires(ctx, 'root', 'unprivileged-userns'); // root to become another user for the test
    const reachable = spawnSync(
      process.execPath,
      ['-e', '0', join(REPO, 'dist', 'src', 'sandbox', 'sandbox.js')],
      {
        uid: 65534,
        gid: 65534,
      },
    );
    if (
      reachable.status !== 0 ||
      spawnSync('test', ['-r', join(REPO, 'dist', 'src', 'sandbox', 'sandbox.js')], {
        uid: 65534,
        gid: 65534,
      }).status !== 0
    )
      ctx.skip(`${REPO} is not readable by an unprivileged user (a checkout under a private directory)`);
    const { dir, policy } = hostTree();
    const conf = join(dir, 'conf');
    const home = freshHome();
    chmodSync(home, 0o755);
    spawnSync('chown', ['-R', '65534:65534', home]);
    const script = writeStarter(
      join(home, 'rootless.mjs'),
      {
        home: join(home, 'state'),
        name: 'rootless',
        command: ['sleep', '600'],
        policy,
        files: [{ path: conf, content: 'the sandbox\n' }],
        rootless: true,
        control: true,
      },
      `console.log('ready');
const check = checks[0] ?? (await nextCheck(10000));
const seen = await execOut(['cat', ${JSON.stringify(conf)}]);
console.log(JSON.stringify({ check, seen, uid: process.getuid() }));`,
    );
    const r = await runStarter(script, {
      as: { uid: 65534, gid: 65534 },
      cwd: home,
      env: { PATH: '/usr/local/bin:/usr/bin:/bin', HOME: home },
      onStdout: (out) => {
        if (out === 'ready\n') replaceOnHost(conf, 'the host, replaced\n');
      },
    });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const result = JSON.parse(r.stdout.split('\n')[1]!) as {
      check: MaskCheck | null;
      seen: string;
      uid: number;
    };
    expect(result.uid).toBe(65534);
    expect(result.check?.restored).toEqual([conf]);
    expect(result.seen).toBe('the sandbox\n');
  });

  it('a sandbox whose gateway was gone when the host replaced the file: masked again when taken over', async (ctx) => {
    requires(ctx, 'root');
    const { dir, policy } = hostTree();
    const conf = join(dir, 'conf');
    const home = freshHome();
    chmodSync(home, 0o711); // the sandbox uids pass through it to their runtime files
    const script = writeStarter(
      join(sharedTempDir(), 'start.mjs'),
      {
        home,
        name: 'adopted',
        command: ['sleep', '600'],
        policy,
        files: [{ path: conf, content: 'the sandbox\n' }],
        ephemeral: false,
        detached: true,
        control: true,
      },
      'console.log(JSON.stringify({ socket: started.control.socketPath, initPid: started.process.initPid }));',
    );
    const { stdout, stderr, code } = await runStarter(script);
    expect(stderr).toBe('');
    expect(code).toBe(0);
    const { socket, initPid } = JSON.parse(stdout) as { socket: string; initPid: number };
    const driver = new BubblewrapDriver({
      dirs: stateDirs({ CARAPACE_HOME: home }),
      identities: hostIdentities(),
    });
    let adopted: ReturnType<BubblewrapDriver['adopt']> = null;
    try {
      const control = new SandboxControl(socket);
      const cat = async () => (await run(control.exec({ argv: ['cat', conf] }))).stdout;
      expect(await cat()).toBe('the sandbox\n');
      // No process holds the sandbox now: the rename detaches the mask and nothing binds it again.
      replaceOnHost(conf, 'the host, replaced\n');
      expect(await cat()).toBe('the host, replaced\n');
      const checks: MaskCheck[] = [];
      adopted = driver.adopt('adopted', (c) => checks.push(c));
      expect(adopted).not.toBeNull();
      expect(await restoredWithin(checks, conf, 10_000)).not.toBeNull();
      expect(await cat()).toBe('the sandbox\n');
    } finally {
      try {
        process.kill(initPid, 'SIGKILL');
      } catch {
        // gone
      }
      if (adopted) {
        await adopted.exited;
        await adopted.release();
      }
    }
  });
});

describe("the sandbox's own directory (/.carapace)", () => {
  it('is reachable by the sandbox whatever the umask of the process that starts it (077)', () => {
    const home = freshHome();
    const r = spawnSync(
      'sh',
      [
        '-c',
        'umask 077; exec "$0" "$@"',
        process.execPath,
        CLI,
        'run',
        '--',
        'sh',
        '-c',
        'cat /etc/hostname; ls /.carapace',
      ],
      { encoding: 'utf8', env: { ...process.env, CARAPACE_HOME: home }, timeout: 60_000 },
    );
    expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: '' });
    // One flat directory: the init, the file mask, and each synthesized file's source by its path.
    const listed = r.stdout.split('\n').filter((l) => l !== '' && !l.startsWith('run-'));
    expect(listed.sort()).toEqual(
      ['%2Fetc%2Fgroup', '%2Fetc%2Fhostname', '%2Fetc%2Fhosts', '%2Fetc%2Fpasswd', 'init', 'masked'].sort(),
    );
  });

  it('a synthesized file whose path leads out of it with `..` is refused before anything is written', async () => {
    const outside = join(sharedTempDir(), 'escaped');
    // A file under /.carapace keeps its name in the own directory: `..` enough to climb out of the
    // run directory to this test's directory. (Elsewhere its `/` are written %2F: no way out.)
    for (const root of ['/.carapace', '/etc']) {
      const path = `${root}/${'../'.repeat(12)}${outside.slice(1)}`;
      await expect(startHeld(['true'], { files: [{ path, content: 'x' }] })).rejects.toThrow(
        /a sandbox file's path must be absolute and normal/,
      );
    }
    expect(existsSync(outside)).toBe(false);
  });

  it('a synthesized file that would take the name of another (the init) is refused', async () => {
    await expect(
      startHeld(['true'], { files: [{ path: '/.carapace/init', content: '#!/bin/sh\n' }] }),
    ).rejects.toThrow(/two sandbox files would be one: "\/.carapace\/init"/);
  });
});
