/**
 * Forwards tell the truth: a host port another program holds is refused where it is asked for
 * (`sandbox create --forward`, `sandbox forward`), with one line and nothing stored; a stored
 * forward whose port a program took while its sandbox was stopped or its gateway down leaves the
 * sandbox running, shows as not listening with the reason (get, list -o wide, -o json, its audit
 * trail), and listens once the port is free again.
 *
 * Host ports are ones the kernel hands out (port 0), so that parallel test files never collide;
 * the port inside is the sandbox's own network namespace's.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removedAfterFile } from '../helpers/cli.js';
import { cliAs, startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { holds } from '../helpers/premises.js';

const INSIDE = 18960;

interface ForwardView {
  hostPort: number;
  sandboxPort: number;
  listening: boolean;
  reason: string | null;
}

/** A host program listening on 127.0.0.1 (port 0: one the kernel picks). */
async function hostListener(port = 0): Promise<{ port: number; close: () => Promise<void> }> {
  const open = new Set<Socket>();
  const server: Server = createServer((s) => {
    open.add(s);
    s.on('close', () => open.delete(s));
    s.end('the host program\n');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port }, () => resolve());
  });
  return {
    port: (server.address() as { port: number }).port,
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        for (const s of open) s.destroy(); // a client that keeps its end open does not hold the close
      }),
  };
}

/** A host port free now (the kernel's pick, let go at once). */
async function freePort(): Promise<number> {
  const l = await hostListener();
  await l.close();
  return l.port;
}

/** What the forward on `port` answers (the page the sandbox serves, or the host program's line). */
async function fetchText(port: number): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${port}/page`, { signal: AbortSignal.timeout(20_000) });
  return res.text();
}

describe.skipIf(!holds('root'))('forwards that tell the truth', () => {
  let gw: TestGateway;
  let policy: string;
  const cli = (args: string[]) => cliAs(gw.home, args);
  const names = () =>
    (JSON.parse(cli(['sandbox', 'list', '-o', 'json']).stdout) as { name: string }[]).map((v) => v.name);
  const forwardsOf = (name: string) =>
    (JSON.parse(cli(['sandbox', 'get', name, '-o', 'json']).stdout) as { forwards: ForwardView[] }).forwards;
  /** Polls until `ok` (the gateway tries a held port again every few seconds). */
  const until = async (ok: () => boolean): Promise<void> => {
    for (let i = 0; i < 120 && !ok(); i++) await sleep(100);
  };
  const serve = (name: string, hostPort: number) =>
    cli([
      'sandbox',
      'create',
      '--name',
      name,
      '--policy',
      policy,
      '--forward',
      `${hostPort}:${INSIDE}`,
      '--',
      'sh',
      '-c',
      `echo ${name} > /sandbox/page; exec python3 -m http.server ${INSIDE} --bind 127.0.0.1 --directory /sandbox`,
    ]);

  beforeAll(async () => {
    gw = await startTestGateway();
    const dir = removedAfterFile(mkdtempSync(join(tmpdir(), 'carapace-forwards-')));
    policy = join(dir, 'listening.yaml');
    writeFileSync(
      policy,
      `version: 1\nfilesystem_policy:\n  read_only: [/usr, /lib, /lib64, /bin, /etc]\n  read_write: [/sandbox, /tmp]\nlisten_ports: [${INSIDE}]\n`,
      { mode: 0o644 },
    );
  });
  afterAll(() => gw?.stop());

  it('a host port another program holds: create and sandbox forward refuse it in one line, and store nothing', async () => {
    const held = await hostListener();
    try {
      const before = names();
      for (const extra of [[], ['--no-start']]) {
        const r = cli([
          'sandbox',
          'create',
          '--name',
          'fw1',
          '--policy',
          policy,
          '--forward',
          `${held.port}:${INSIDE}`,
          ...extra,
          '--',
          'sleep',
          'infinity',
        ]);
        const what = `create ${extra.join(' ')} → ${r.status}: ${r.stdout}${r.stderr}`;
        expect(r.status, what).toBe(2);
        expect(r.stdout, what).toBe('');
        expect(r.stderr, what).toMatch(
          new RegExp(
            `^carapace: host port ${held.port} is in use by another program on this host: pick another, e.g. --forward \\d+:${INSIDE}\\n$`,
          ),
        );
        expect(names()).toEqual(before);
      }
      // The port it suggests is one it could listen on: taking it works.
      const suggested = /--forward (\d+):/.exec(
        cli([
          'sandbox',
          'create',
          '--name',
          'fw1',
          '--policy',
          policy,
          '--forward',
          `${held.port}:${INSIDE}`,
          '--',
          'true',
        ]).stderr,
      )![1]!;
      expect(serve('fw1', Number(suggested)).stdout).toBe('fw1 running\n');
      await until(() => forwardsOf('fw1')[0]?.listening === true);
      expect(forwardsOf('fw1')).toEqual([
        { hostPort: Number(suggested), sandboxPort: INSIDE, listening: true, reason: null },
      ]);

      // Added to a running sandbox, or to a stopped one: refused the same, nothing added.
      for (const state of ['running', 'stopped']) {
        if (state === 'stopped') expect(cli(['sandbox', 'stop', 'fw1', '--grace', '1']).status).toBe(0);
        const r = cli(['sandbox', 'forward', 'fw1', `${held.port}:${INSIDE}`]);
        expect(r.status, `${state}: ${r.stderr}`).toBe(2);
        expect(r.stderr).toMatch(
          new RegExp(
            `^carapace: host port ${held.port} is in use by another program on this host: pick another, e.g. carapace sandbox forward fw1 \\d+:${INSIDE}\\n$`,
          ),
        );
        expect(cli(['sandbox', 'forward', 'fw1', '--list']).stdout).toBe(
          `127.0.0.1:${suggested} → fw1:${INSIDE}\n`,
        );
      }
    } finally {
      await held.close();
    }
    expect(cli(['sandbox', 'delete', 'fw1']).status).toBe(0);
  });

  it('a stored forward a program took while the sandbox was stopped or the gateway down: it runs, says why the forward does not listen, and listens once the port is free', async () => {
    const port = await freePort();
    expect(serve('web', port).stdout).toBe('web running\n');
    await until(() => forwardsOf('web')[0]?.listening === true);
    expect(cli(['sandbox', 'stop', 'web', '--grace', '1']).status).toBe(0);

    // Started while a host program holds its port: it runs, and says so on stderr.
    let held = await hostListener(port);
    const started = cli(['sandbox', 'start', 'web']);
    expect(started.status, started.stderr).toBe(0);
    expect(started.stdout).toBe('web running\n');
    const notListening = `host port ${port} is in use by another program on this host`;
    expect(started.stderr).toBe(
      `carapace: web: forward 127.0.0.1:${port} → ${INSIDE} (not listening: ${notListening}; the gateway keeps trying)\n`,
    );
    const shown = (): void => {
      expect(forwardsOf('web')).toEqual([
        {
          hostPort: port,
          sandboxPort: INSIDE,
          listening: false,
          reason: 'in use by another program on this host',
        },
      ]);
      expect(cli(['sandbox', 'get', 'web']).stdout).toContain(
        `forwards:   127.0.0.1:${port} → ${INSIDE} (not listening: ${notListening}; the gateway keeps trying)\n`,
      );
      expect(cli(['sandbox', 'list', '-o', 'wide']).stdout).toContain(
        `${port}→${INSIDE} (not listening: in use by another program on this host)`,
      );
    };
    shown();
    // What answers on the port is the host's program, and nobody is told otherwise.
    expect(await fetchText(port).catch((e: Error) => e.message)).not.toBe('web\n');
    const audit = () =>
      cli(['sandbox', 'logs', 'web', '--audit', '--type', 'lifecycle'])
        .stdout.trim()
        .split('\n')
        .map((l) => (JSON.parse(l) as { message: string }).message)
        .filter((m) => m.startsWith('forward '));
    expect(audit()).toEqual([
      `forward 127.0.0.1:${port} → ${INSIDE} of web is not listening: ${notListening}; tried again every 5s`,
    ]);
    // The port freed, the gateway takes it (tried again every few seconds) and it reaches the sandbox.
    await held.close();
    await until(() => forwardsOf('web')[0]?.listening === true);
    expect(forwardsOf('web')).toEqual([
      { hostPort: port, sandboxPort: INSIDE, listening: true, reason: null },
    ]);
    expect(await fetchText(port)).toBe('web\n');
    expect(audit()[1]).toBe(`forward 127.0.0.1:${port} → ${INSIDE} of web listens now`);

    // The same when the port is taken while no gateway runs: the next one re-adopts the sandbox
    // and says why its forward does not listen.
    const home = gw.home;
    await gw.stop();
    held = await hostListener(port);
    gw = await startTestGateway([], home);
    try {
      shown();
      expect(audit()).toHaveLength(3);
    } finally {
      await held.close();
    }
    await until(() => forwardsOf('web')[0]?.listening === true);
    expect(await fetchText(port)).toBe('web\n');
  }, 180_000);
});
