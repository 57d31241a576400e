/**
 * A sandbox floods its output log to make the gateway work for it (docs/security.md, "What a
 * sandbox makes the gateway do"). Each new log file the init asks for costs the gateway a fork
 * (carapace-sendfd, in the gateway's own cgroup), and the sandbox decides how often it asks: at
 * `--log-rotate 1Mi:2`, once per 512 KiB of output. Without a bound, an agent writing 48 MiB as
 * fast as it can makes the gateway answer ~96 times within a few seconds. With it, the gateway
 * answers a sandbox at most once per MIN_ANSWER_INTERVAL_MS, whatever the sandbox writes; the
 * rest of the output is dropped and counted in the sandbox's own log (the init's `dropped` line),
 * no file passes SIZE, and output written after the flood still arrives.
 */
import { existsSync, lstatSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GatewayClient } from '../../src/cli/gateway/gateway-client.js';
import { MIN_ANSWER_INTERVAL_MS } from '../../src/gateway/sandboxes/sandbox-events.js';
import { freshHome } from '../helpers/cli.js';
import { cliAs, startTestGateway, until, type TestGateway } from '../helpers/gateway.js';
import { FS_POLICY } from '../helpers/network.js';
import { holds } from '../helpers/premises.js';

const MiB = 1024 * 1024;

const AGENT = [
  'import os, time',
  'chunk = b"x" * 65535 + b"\\n"',
  `for i in range(${(48 * MiB) / 65536}): os.write(1, chunk)`,
  'open("/sandbox/done", "w").close()',
  'while not os.path.exists("/sandbox/go"): time.sleep(0.02)',
  'os.write(1, b"after the flood\\n")',
  'time.sleep(1e9)',
].join('\n');

describe.skipIf(!holds('root'))('a sandbox flooding its log', () => {
  let gw: TestGateway;
  const home = freshHome();
  beforeAll(async () => {
    gw = await startTestGateway(['--log-rotate', '1Mi:2'], home);
  });
  afterAll(async () => {
    cliAs(gw.home, ['sandbox', 'delete', 'flood']);
    await gw.stop();
  });

  it('gets at most one answer per interval from the gateway; the rest is dropped and counted in its own log', async () => {
    const api = new GatewayClient({
      socket: join(home, 'run', 'gateway.sock'),
      own: false,
      dirs: { state: join(home, 'state'), run: join(home, 'run') },
    });
    const started = performance.now();
    const view = await api.call<{ id: string; workspace: string }>('POST', '/v1/sandboxes', {
      name: 'flood',
      command: ['python3', '-c', AGENT],
      policy: FS_POLICY,
    });
    await until('the flood', () => existsSync(join(view.workspace, 'done')), 300_000);

    const answers = () =>
      gw
        .output()
        .split('\n')
        .filter((l) => l.includes('"answered a sandbox log request"') && l.includes('"sandbox":"flood"'))
        .map((l) => JSON.parse(l) as { rotated: boolean; deferred: number });
    // The sandbox asked more often than it was answered: a request waited (its answer, when it
    // comes, says so).
    const deferred = () => answers().reduce((n, a) => n + a.deferred, 0);
    await until('a deferred answer', () => deferred() > 0);
    const got = answers();
    const elapsed = performance.now() - started;
    console.log(
      `log flood: ${got.length} answers in ${(elapsed / 1000).toFixed(1)} s, ${got.reduce((n, a) => n + a.deferred, 0)} requests deferred`,
    );
    // Every answer so far began after `started`, each at least the interval after the one before.
    expect(got.length).toBeLessThanOrEqual(Math.floor(elapsed / MIN_ANSWER_INTERVAL_MS) + 1);
    expect(got.some((a) => a.rotated)).toBe(true);
    // Its log says what it lost meanwhile.
    const logs = join(home, 'state', 'logs');
    const files = readdirSync(logs).filter((n) => n.startsWith(`${view.id}.log`));
    for (const n of files) expect(lstatSync(join(logs, n)).size).toBeLessThanOrEqual(MiB);
    const text = () =>
      files.map((n) => (existsSync(join(logs, n)) ? readFileSync(join(logs, n), 'utf8') : '')).join('');
    expect(text()).toMatch(/"s":"init","d":"carapace-init: logs: \d+ bytes of output dropped/);

    // Not starved: what it writes after the flood reaches its log.
    writeFileSync(join(view.workspace, 'go'), '');
    await until('the line after the flood', () =>
      cliAs(gw.home, ['sandbox', 'logs', 'flood', '--tail', '5']).stdout.includes('after the flood'),
    );
  });
});
