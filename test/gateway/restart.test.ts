/**
 * Always on (issue 13): restart policies with backoff and a crash-loop end, and a simulated reboot
 * (the gateway stopped and started again) brings back exactly the sandboxes that should run.
 */
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, describe, expect, it } from 'vitest';
import { freshHome } from '../helpers/cli.js';
import { cliAs, startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { holds } from '../helpers/premises.js';
import { policyFile } from '../helpers/sandbox.js';
import {
  chmodSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';

/** GET a path on the host's loopback, retried while the listener inside comes up. */
async function fetchText(port: number, path: string): Promise<string> {
  for (let i = 0; ; i++) {
    try {
      const res = await fetch(`http://127.0.0.1:${port}${path}`, { signal: AbortSignal.timeout(5000) });
      return await res.text();
    } catch (err) {
      if (i >= 100) throw err;
      await sleep(100);
    }
  }
}

interface View {
  name: string;
  state: string;
  desired: string;
  restarts: number;
  exitCode: number | null;
  reason: string | null;
  workspace: string;
  restartAt: string | null;
}

describe.skipIf(!holds('root'))('restart policies and reboots', () => {
  const gateways: TestGateway[] = [];
  afterAll(async () => {
    for (const gw of gateways) await gw.stop();
  });
  const get = (gw: TestGateway, name: string) =>
    JSON.parse(cliAs(gw.home, ['sandbox', 'get', name, '-o', 'json']).stdout) as View;
  const until = async (gw: TestGateway, name: string, ok: (v: View) => boolean): Promise<View> => {
    for (;;) {
      const v = get(gw, name);
      if (ok(v)) return v;
      await sleep(50);
    }
  };

  it('always: runs again after each end, with backoff, until a crash loop ends it failed', async () => {
    const gw = await startTestGateway(['--restart-backoff', '50ms:200ms', '--crash-loop', '3']);
    gateways.push(gw);
    const create = cliAs(gw.home, [
      'sandbox',
      'create',
      '--name',
      'flaky',
      '--restart',
      'always',
      '--',
      'sh',
      '-c',
      'echo run; exit 1',
    ]);
    expect(create.status).toBe(0);
    const failed = await until(gw, 'flaky', (v) => v.state === 'failed');
    expect(failed.reason).toMatch(/^crash loop: 4 runs in a row .*last status 1/);
    expect(failed.restarts).toBe(3);
    expect(failed.desired).toBe('stopped');
    expect(cliAs(gw.home, ['sandbox', 'logs', 'flaky']).stdout).toBe('run\nrun\nrun\nrun\n');
    expect(cliAs(gw.home, ['sandbox', 'logs', 'flaky', '--tail', '2']).stdout).toBe('run\nrun\n');
    // Its audit trail says each end and what came of it.
    const ends = cliAs(gw.home, ['sandbox', 'logs', 'flaky', '--audit', '--type', 'lifecycle'])
      .stdout.trim()
      .split('\n')
      .map((l) => (JSON.parse(l) as { message: string }).message)
      .filter((m) => m.startsWith('agent of flaky ended'));
    expect(ends).toHaveLength(4);
    // The last of them, read from the end of the trail.
    const last = cliAs(gw.home, [
      'sandbox',
      'logs',
      'flaky',
      '--audit',
      '--type',
      'lifecycle',
      '--tail',
      '1',
    ]);
    expect((JSON.parse(last.stdout) as { message: string }).message).toMatch(/crash loop/);
    // With -o text (as at a terminal): one readable line an event; -o json: the JSON lines as kept.
    const lastOf = (o: string) =>
      cliAs(gw.home, ['sandbox', 'logs', 'flaky', '--audit', '--type', 'lifecycle', '--tail', '1', '-o', o]);
    expect(lastOf('text').stdout).toMatch(
      /^\d{4}-\d\d-\d\dT[\d:.]+Z {2}lifecycle \w+ +- {8}- {2}\S[^\n]*\n$/,
    );
    expect(lastOf('json').stdout).toBe(last.stdout);
    expect(ends[0]).toMatch(
      /^agent of flaky ended with status 1 after \d+m?s \(restart always\): restarting in 50ms$/,
    );
    expect(ends[3]).toMatch(/: crash loop: 4 runs in a row .*; it is failed$/);
    // Started by hand, it gets a fresh count: four more runs before the crash loop ends it again
    // (counting the old runs, it would fail at its first end).
    expect(cliAs(gw.home, ['sandbox', 'start', 'flaky']).status).toBe(0);
    const again = await until(gw, 'flaky', (v) => v.state === 'failed');
    expect(again).toMatchObject({ restarts: 6, desired: 'stopped' });
    expect(again.reason).toMatch(/^crash loop: 4 runs in a row /);
    // A crash loop waits for `sandbox start`: a gateway restart (or a reboot) leaves it failed.
    await gw.stop();
    const next = await startTestGateway([], gw.home);
    gateways.push(next);
    expect(get(next, 'flaky')).toMatchObject({ state: 'failed', restarts: 6, reason: again.reason });
    cliAs(next.home, ['sandbox', 'update', 'flaky', '--restart', 'never']);
    expect(cliAs(next.home, ['sandbox', 'start', 'flaky']).status).toBe(0);
    const once = await until(next, 'flaky', (v) => v.state === 'stopped');
    expect(once).toMatchObject({ exitCode: 1, desired: 'stopped', restarts: 6 });
  });

  it('a stop while a restart waits for its backoff calls it off, and says so', async () => {
    const gw = await startTestGateway(['--restart-backoff', '1h:1h']);
    gateways.push(gw);
    expect(
      cliAs(gw.home, ['sandbox', 'create', '--name', 'waits', '--restart', 'always', '--', 'false']).status,
    ).toBe(0);
    const waiting = await until(gw, 'waits', (v) => v.reason !== null);
    expect(waiting).toMatchObject({
      state: 'stopped',
      desired: 'running',
      reason: 'restarting in 60m (status 1)',
    });
    // When it is due; `sandbox list` shows it restarting, not merely stopped.
    expect(Date.parse(waiting.restartAt ?? '') - Date.now()).toBeGreaterThan(50 * 60_000);
    expect(cliAs(gw.home, ['sandbox', 'list']).stdout).toMatch(/^waits +restarting \(1\) +0 /m);
    // `sandbox get` says why it is stopped and that it should run.
    const shown = cliAs(gw.home, ['sandbox', 'get', 'waits']).stdout;
    expect(shown).toMatch(
      /^state: +stopped \(status 1\)\nreason: +restarting in 60m \(status 1\)\nshould run: +yes\n/m,
    );
    // A restart by hand is not one of its restart policy's: the count stays, and its end (at once,
    // while the command may still be returning) waits for the policy's restart again.
    expect(cliAs(gw.home, ['sandbox', 'restart', 'waits']).status).toBe(0);
    expect(await until(gw, 'waits', (v) => v.reason !== null)).toMatchObject({
      state: 'stopped',
      restarts: 0,
      reason: 'restarting in 60m (status 1)',
    });
    expect(cliAs(gw.home, ['sandbox', 'stop', 'waits']).status).toBe(0);
    expect(get(gw, 'waits')).toMatchObject({
      state: 'stopped',
      desired: 'stopped',
      reason: null,
      restartAt: null,
    });
    expect(cliAs(gw.home, ['sandbox', 'list']).stdout).toMatch(/^waits +stopped \(1\) +0 /m);
  });

  it('on-failure restarts a failure and not a clean exit; never restarts nothing', async () => {
    const gw = await startTestGateway(['--restart-backoff', '50ms:200ms', '--crash-loop', '3']);
    gateways.push(gw);
    const marker = '/sandbox/tries';
    cliAs(gw.home, [
      'sandbox',
      'create',
      '--name',
      'second-try',
      '--restart',
      'on-failure',
      '--',
      'sh',
      '-c',
      `echo x >> ${marker}; [ $(wc -l < ${marker}) -ge 2 ]`,
    ]);
    const done = await until(gw, 'second-try', (v) => v.state === 'stopped' && v.desired === 'stopped');
    expect(done).toMatchObject({ exitCode: 0, restarts: 1 });
    cliAs(gw.home, ['sandbox', 'create', '--name', 'once', '--restart', 'never', '--', 'sh', '-c', 'exit 3']);
    expect(await until(gw, 'once', (v) => v.state === 'stopped')).toMatchObject({
      exitCode: 3,
      restarts: 0,
      desired: 'stopped',
    });
  });

  /**
   * A sandbox whose agent waits for /data/stop, then fails; /data is a host directory the test
   * moves away first, so that every restart's start fails (its mount source is gone) until it is
   * put back.
   */
  const withMissingMount = (gw: TestGateway, name: string) => {
    const dir = mkdtempSync(join(tmpdir(), 'carapace-mount-'));
    chmodSync(dir, 0o755);
    const create = cliAs(gw.home, [
      'sandbox',
      'create',
      '--name',
      name,
      '--restart',
      'always',
      '--mount',
      `${dir}:/data:ro`,
      '--',
      'sh',
      '-c',
      'while [ ! -e /data/stop ]; do sleep 0.1; done; exit 1',
    ]);
    expect(create.status).toBe(0);
    // Moved away while the agent runs (its mount holds the directory), then the agent ends.
    renameSync(dir, `${dir}.away`);
    writeFileSync(`${dir}.away/stop`, '');
    return {
      putBack: () => {
        rmSync(`${dir}.away/stop`);
        renameSync(`${dir}.away`, dir);
      },
      remove: () => rmSync(existsSync(dir) ? dir : `${dir}.away`, { recursive: true, force: true }),
    };
  };

  it('a restart whose start fails is a crash: tried again after its backoff until it starts', async () => {
    const gw = await startTestGateway(['--restart-backoff', '50ms:100ms', '--crash-loop', '1000']);
    gateways.push(gw);
    const mount = withMissingMount(gw, 'unmounted');
    try {
      // Failed, and to be started again (not failed for good, as it was before).
      const waiting = await until(gw, 'unmounted', (v) => v.state === 'failed');
      expect(waiting.desired).toBe('running');
      expect(waiting.reason).toMatch(/^restarting in \d+ms \(its start failed: .*does not exist\)$/);
      mount.putBack();
      const back = await until(gw, 'unmounted', (v) => v.state === 'running');
      expect(back.restarts).toBeGreaterThanOrEqual(2);
      const ends = cliAs(gw.home, ['sandbox', 'logs', 'unmounted', '--audit', '--type', 'lifecycle'])
        .stdout.trim()
        .split('\n')
        .map((l) => (JSON.parse(l) as { message: string }).message);
      expect(ends).toContainEqual(
        expect.stringMatching(
          /^unmounted did not start again: .*does not exist \(restart always\): restarting in \d+ms$/,
        ),
      );
    } finally {
      cliAs(gw.home, ['sandbox', 'delete', 'unmounted']);
      mount.remove();
    }
  });

  it('a sandbox whose start failed and waits for its backoff is listed restarting, not failed', async () => {
    // 2 s, then 4 s: the second wait is the one seen (the first start after the end fails).
    const gw = await startTestGateway(['--restart-backoff', '2s:1h', '--crash-loop', '1000']);
    gateways.push(gw);
    const mount = withMissingMount(gw, 'later');
    try {
      const waiting = await until(gw, 'later', (v) => v.state === 'failed' && v.restartAt !== null);
      expect(waiting).toMatchObject({
        desired: 'running',
        reason: expect.stringMatching(/its start failed/),
      });
      expect(cliAs(gw.home, ['sandbox', 'list']).stdout).toMatch(/^later +restarting\b/m);
    } finally {
      cliAs(gw.home, ['sandbox', 'delete', 'later']);
      mount.remove();
    }
  });

  it('a restart that keeps failing to start ends in its crash loop, failed with the reason', async () => {
    const gw = await startTestGateway(['--restart-backoff', '10ms:10ms', '--crash-loop', '2']);
    gateways.push(gw);
    const mount = withMissingMount(gw, 'gone');
    try {
      const failed = await until(
        gw,
        'gone',
        (v) => v.state === 'failed' && !/^restarting/.test(v.reason ?? ''),
      );
      expect(failed.desired).toBe('stopped');
      expect(failed.reason).toMatch(/^crash loop: 3 runs in a row .*last start failed: .*does not exist/);
      expect(failed.restarts).toBe(2);
      // Started by hand, it says why it does not start, in one line (not an internal error).
      const start = cliAs(gw.home, ['sandbox', 'start', 'gone']);
      expect(start.status).not.toBe(0);
      expect(start.stderr).toMatch(/^carapace: --mount .*does not exist\n$/);
    } finally {
      cliAs(gw.home, ['sandbox', 'delete', 'gone']);
      mount.remove();
    }
  });

  it('a sandbox that should run and does not start when the gateway starts (a mount not there yet at boot) is tried again until it starts', async () => {
    const home = freshHome();
    const options = ['--restart-backoff', '50ms:100ms', '--crash-loop', '1000'];
    const first = await startTestGateway(options, home);
    gateways.push(first);
    const dir = mkdtempSync(join(tmpdir(), 'carapace-mount-'));
    chmodSync(dir, 0o755);
    try {
      const create = cliAs(home, [
        'sandbox',
        'create',
        '--name',
        'boot',
        '--restart',
        'on-failure',
        '--mount',
        `${dir}:/data:ro`,
        '--',
        'sleep',
        '300',
      ]);
      expect(create.status, create.stderr).toBe(0);
      await first.stop();
      // A reboot: the sandbox killed with the host, and its mount source not there yet.
      const runs = join(home, 'run', 'sandboxes');
      for (const lock of readdirSync(runs).filter((f) => f.endsWith('.lock'))) {
        const { pid } = JSON.parse(readFileSync(join(runs, lock), 'utf8')) as { pid: number };
        process.kill(pid, 'SIGKILL');
      }
      renameSync(dir, `${dir}.away`);
      const second = await startTestGateway(options, home);
      gateways.push(second);
      const failed = get(second, 'boot');
      expect(failed).toMatchObject({ state: 'failed', desired: 'running' });
      expect(failed.reason).toMatch(/^restarting in \d+ms \(its start failed: .*does not exist\)$/);
      renameSync(`${dir}.away`, dir);
      expect(await until(second, 'boot', (v) => v.state === 'running')).toMatchObject({ desired: 'running' });
      cliAs(home, ['sandbox', 'delete', 'boot']);
    } finally {
      rmSync(existsSync(dir) ? dir : `${dir}.away`, { recursive: true, force: true });
    }
  });

  it('a reboot (gateway and sandboxes gone, the gateway started again) brings back exactly what should run, with its workspace, forward and policy revisions', async () => {
    const home = freshHome();
    const first = await startTestGateway([], home);
    gateways.push(first);
    // `up` keeps a line per start in its workspace and serves it on a forwarded port.
    const port = 18941;
    const policy = policyFile(
      `version: 1\nfilesystem_policy:\n  read_only: [/usr, /lib, /lib64, /bin, /etc]\n  read_write: [/sandbox, /tmp]\nlisten_ports: [${port}]\n`,
    );
    const up = cliAs(home, [
      'sandbox',
      'create',
      '--name',
      'up',
      '--policy',
      policy,
      '--forward',
      String(port),
      '--',
      'sh',
      '-c',
      `echo kept >> /sandbox/f; exec python3 -m http.server ${port} --bind 127.0.0.1 --directory /sandbox`,
    ]);
    expect(up.status, up.stderr).toBe(0);
    // A second policy revision, live.
    const updated = cliAs(home, ['policy', 'update', 'up', '--add-endpoint', 'kept.test:443']);
    expect(updated.status, updated.stderr).toBe(0);
    const revisions = () =>
      (JSON.parse(cliAs(home, ['policy', 'history', 'up', '-o', 'json']).stdout) as { rev: number }[]).map(
        (r) => r.rev,
      );
    expect(revisions()).toEqual([1, 2]);
    cliAs(home, ['sandbox', 'create', '--name', 'down', '--', 'sleep', '300']);
    cliAs(home, ['sandbox', 'stop', 'down', '--grace', '1']);
    cliAs(home, ['sandbox', 'create', '--name', 'never-started', '--no-start', '--', 'sleep', '300']);
    const ws = get(first, 'up').workspace;
    await until(first, 'up', () => readFileSync(join(ws, 'f'), 'utf8') === 'kept\n');
    await first.stop();
    // A reboot: the gateway is gone and so is every sandbox, killed at once (no exit.json).
    const runs = join(home, 'run', 'sandboxes');
    for (const lock of readdirSync(runs).filter((f) => f.endsWith('.lock'))) {
      const { pid } = JSON.parse(readFileSync(join(runs, lock), 'utf8')) as { pid: number };
      process.kill(pid, 'SIGKILL');
    }

    const second = await startTestGateway([], home);
    gateways.push(second);
    expect(get(second, 'up').state).toBe('running');
    expect(get(second, 'down').state).toBe('stopped');
    expect(get(second, 'never-started').state).toBe('stopped');
    await until(second, 'up', () => readFileSync(join(ws, 'f'), 'utf8') === 'kept\nkept\n');
    // Its forward and its policy revisions came back with it.
    expect(cliAs(home, ['sandbox', 'forward', 'up', '--list']).stdout).toBe(
      `127.0.0.1:${port} → up:${port}\n`,
    );
    expect(await fetchText(port, '/f')).toBe('kept\nkept\n');
    expect(revisions()).toEqual([1, 2]);
    expect(cliAs(home, ['policy', 'get', 'up']).stdout).toContain('host: kept.test');
  });
});
