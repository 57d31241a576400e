/**
 * Reaching into a running sandbox through the gateway (issue 12): exec (exit code, stdin, stdout,
 * stderr), upload and download, and a port forward that answers on the host, is listed and
 * removable, and comes back with the sandbox after a gateway restart.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { get } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI } from '../helpers/cli.js';
import { cliAs, startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { holds } from '../helpers/premises.js';
import { policyFile } from '../helpers/sandbox.js';

const POLICY = `version: 1
filesystem_policy:
  read_only: [/usr, /lib, /lib64, /bin, /etc]
  read_write: [/sandbox, /tmp]
listen_ports: [18901]
`;

/** The whole reply to a request sent by a client that then closes its sending side (`nc -N`). */
function halfClosedGet(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no answer on 127.0.0.1:${port} in 20 s`)), 20_000);
    const s = connect({ host: '127.0.0.1', port, allowHalfOpen: true }, () =>
      s.end('GET /hello.txt HTTP/1.0\r\n\r\n'),
    );
    let t = '';
    s.on('data', (d: Buffer) => (t += String(d)));
    s.on('end', () => {
      clearTimeout(timer);
      resolve(t);
    });
    s.on('error', reject);
  });
}

function httpGet(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    // A request that gets no answer says so (the test's timeout would not say where).
    const timer = setTimeout(() => reject(new Error(`no answer on 127.0.0.1:${port} in 20 s`)), 20_000);
    get({ host: '127.0.0.1', port, path: '/hello.txt', agent: false }, (res) => {
      clearTimeout(timer);
      let t = '';
      res.on('data', (d: Buffer) => (t += String(d)));
      res.on('end', () => resolve(t));
    }).on('error', reject);
  });
}

describe.skipIf(!holds('root'))('exec, files and forwards through the gateway', () => {
  let gw: TestGateway;
  const cli = (args: string[], input?: string) =>
    spawnSync(process.execPath, [CLI, ...args], {
      encoding: 'utf8',
      input,
      env: { PATH: process.env.PATH, CARAPACE_HOME: gw.home },
      timeout: 60_000,
    });
  /** web as `sandbox list` shows it (the gateway keeps each view serialized: it must follow). */
  const listed = () =>
    (
      JSON.parse(cli(['sandbox', 'list', '-o', 'json']).stdout) as {
        name: string;
        state: string;
        forwards: unknown[];
        createdAt: string;
        startedAt: string | null;
      }[]
    ).find((v) => v.name === 'web');
  beforeAll(async () => {
    gw = await startTestGateway();
    const r = cliAs(gw.home, [
      'sandbox',
      'create',
      '--name',
      'web',
      '--policy',
      policyFile(POLICY),
      '--forward',
      '18901',
      '--',
      'python3',
      '-m',
      'http.server',
      '18901',
      '--bind',
      '127.0.0.1',
      '--directory',
      '/sandbox',
    ]);
    expect(r.stdout).toBe('web running\n');
  });
  afterAll(() => gw?.stop());

  it('exec: the exit code, stdin, stdout and stderr are the command’s', () => {
    const r = cli(
      ['sandbox', 'exec', '-i', 'web', '--', 'sh', '-c', 'cat; echo err >&2; id -u; exit 7'],
      'from stdin\n',
    );
    expect(r.status).toBe(7);
    expect(r.stdout).toBe('from stdin\n1000\n');
    expect(r.stderr).toBe('err\n');
    const missing = cli(['sandbox', 'exec', 'web', '--', 'no-such-command']);
    expect(missing.status).toBe(127);
    expect(missing.stderr).toMatch(
      /^carapace: carapace-init: exec: no-such-command .*No such file or directory\n$/,
    );
  });

  it('exec is as confined as the agent', () => {
    const r = cli(['sandbox', 'exec', 'web', '--', 'sh', '-c', 'cat /etc/shadow; ls /root']);
    expect(r.status).not.toBe(0);
    expect(r.stdout).toBe('');
  });

  it('upload and download move files in and out', () => {
    const dir = mkdtempSync(join(tmpdir(), 'carapace-up-'));
    mkdirSync(join(dir, 'site'));
    writeFileSync(join(dir, 'site', 'hello.txt'), 'hello from the host\n');
    expect(cli(['sandbox', 'upload', 'web', join(dir, 'site', 'hello.txt')]).status).toBe(0);
    expect(cli(['sandbox', 'exec', 'web', '--', 'cat', '/sandbox/hello.txt']).stdout).toBe(
      'hello from the host\n',
    );
    const out = mkdtempSync(join(tmpdir(), 'carapace-down-'));
    expect(cli(['sandbox', 'download', 'web', '/sandbox/hello.txt', out]).status).toBe(0);
    expect(readFileSync(join(out, 'hello.txt'), 'utf8')).toBe('hello from the host\n');
    const refused = cli(['sandbox', 'download', 'web', '/sandbox/nothing-here', out]);
    expect(refused.status, `${refused.stdout}${refused.stderr}${gw.output()}`).not.toBe(0);
    expect(refused.stderr).toMatch(
      /^carapace: download of \/sandbox\/nothing-here: tar: nothing-here: Cannot stat: No such file or directory\n$/,
    );
    // Into a host directory that is not there: said before anything is copied, as for upload.
    const nowhere = join(out, 'not-made');
    const missing = cli(['sandbox', 'download', 'web', '/sandbox/hello.txt', nowhere]);
    expect(missing.stderr).toBe(`carapace: download into ${nowhere}: no such directory (make it first)\n`);
    expect(missing.status).toBe(2);
    const file = cli(['sandbox', 'download', 'web', '/sandbox/hello.txt', join(out, 'hello.txt')]);
    expect(file.stderr).toBe(`carapace: download into ${join(out, 'hello.txt')}: not a directory\n`);
    expect(file.status).toBe(2);
  });

  it('download: what comes out is the caller’s, never the sandbox’s owners nor its set-uid bits', () => {
    // The attack: an agent makes a set-uid program in its workspace and waits for root to
    // download it. Extracted with the archive's owners and modes, it would be a set-uid program
    // of the host user whose uid is the sandbox's inside (1000), planted by root.
    const made = cli([
      'sandbox',
      'exec',
      'web',
      '--',
      'sh',
      '-c',
      'cp /bin/true /sandbox/suid && chmod 4755 /sandbox/suid',
    ]);
    expect(made.status, made.stderr).toBe(0);
    const out = mkdtempSync(join(tmpdir(), 'carapace-down-'));
    expect(cli(['sandbox', 'download', 'web', '/sandbox/suid', out]).status).toBe(0);
    const st = statSync(join(out, 'suid'));
    expect({ uid: st.uid, gid: st.gid, special: st.mode & 0o7000 }).toEqual({ uid: 0, gid: 0, special: 0 });
  });

  it('a forward answers on the host, is listed, survives a gateway restart, and goes away when removed', async () => {
    expect(await httpGet(18901)).toBe('hello from the host\n');
    // A client that half-closes after its request still gets the reply.
    expect(await halfClosedGet(18901)).toMatch(/^HTTP\/1\.0 200 [^]*\r\n\r\nhello from the host\n$/);
    expect(cli(['sandbox', 'forward', 'web', '--list']).stdout).toBe('127.0.0.1:18901 → web:18901\n');
    expect(listed()).toMatchObject({
      state: 'running',
      forwards: [{ hostPort: 18901, sandboxPort: 18901, listening: true, reason: null }],
    });
    // An exec left open (a `sandbox connect` nobody closed) does not hold the gateway's stop.
    const open = spawn(process.execPath, [CLI, 'sandbox', 'exec', '-i', 'web', '--', 'cat'], {
      env: { PATH: process.env.PATH, CARAPACE_HOME: gw.home },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    open.stdin.write('ping\n');
    await new Promise<void>((resolve) => open.stdout.once('data', () => resolve()));
    const home = gw.home;
    // Its run's start, from its init: the restarted gateway re-adopts the same run.
    const started = listed()?.startedAt;
    expect(Math.abs(Date.parse(started ?? '') - Date.now())).toBeLessThan(10 * 60_000);
    // Read against the boot's time in whole seconds, it is never put before its record.
    expect(Date.parse(started ?? '')).toBeGreaterThanOrEqual(Date.parse(listed()!.createdAt));
    const ended = new Promise<number | null>((resolve) => open.once('exit', resolve));
    await gw.stop();
    expect(await ended).not.toBe(0); // its connection was cut: the command says so and fails
    gw = await startTestGateway([], home);
    expect(await httpGet(18901)).toBe('hello from the host\n');
    expect(listed()?.startedAt).toBe(started);
    expect(cli(['sandbox', 'forward', 'web', '--remove', '18901']).stdout).toBe('no forwards for web\n');
    await expect(httpGet(18901)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    expect(listed()?.forwards).toEqual([]);
    // A port below 1024 is not a user's to forward; root's is (as an admin it may).
    expect(cli(['sandbox', 'forward', 'web', '18902:18901']).status).toBe(0);
    expect(await httpGet(18902)).toBe('hello from the host\n');
    expect(listed()?.forwards).toEqual([
      { hostPort: 18902, sandboxPort: 18901, listening: true, reason: null },
    ]);
  });

  it('exec on a stopped sandbox: one line, no hang', () => {
    expect(listed()?.state).toBe('running');
    expect(cli(['sandbox', 'stop', 'web', '--grace', '1']).status).toBe(0);
    expect(listed()?.state).toBe('stopped');
    const r = cli(['sandbox', 'exec', 'web', '--', 'true']);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toBe('carapace: sandbox web is stopped, not running: carapace sandbox start web\n');
  });
});
