/**
 * `gateway start OPTIONS` (docs/gateway.md, "Options"): the proxy's operator settings of
 * `carapace run` (`--resolve`, `--allow-local`) for a gateway the CLI starts, kept for the next
 * start, shown by `gateway status`, checked with run's own lines. The agent's upstream is a server
 * on this host's loopback: the SSRF guard refuses it unless the operator trusts that exact address.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freshHome } from '../helpers/cli.js';
import { cliAs } from '../helpers/gateway.js';
import { REQUEST_AGENT, requester } from '../helpers/gateway-agent.js';
import { FS_POLICY, readAudit } from '../helpers/network.js';
import { holds } from '../helpers/premises.js';
import { sharedTempDir } from '../helpers/sandbox.js';
import { startUpstreams, type Upstreams } from '../proxy/harness.js';

describe.skipIf(!holds('root'))('gateway start with options', () => {
  const home = freshHome();
  const cli = (args: string[]) => cliAs(home, args);
  const stored = join(home, 'state', 'gateway-options.json');
  let up: Upstreams;

  beforeAll(async () => {
    up = await startUpstreams();
  });
  afterAll(async () => {
    if (existsSync(join(home, 'run', 'gateway.sock'))) {
      cli(['sandbox', 'delete', 'web']);
      cli(['gateway', 'stop']);
    }
    await up?.close();
  });

  it('refuses a bad option with run’s line, storing and starting nothing', () => {
    for (const [args, line] of [
      [
        ['--allow-local', 'localhost:11434'],
        'carapace: --allow-local "localhost:11434": expected IP:PORT or [IPv6]:PORT, e.g. 127.0.0.1:11434\n',
      ],
      [
        ['--resolve', 'up.test'],
        'carapace: --resolve "up.test": expected HOST=IP, e.g. api.example.com=127.0.0.1\n',
      ],
      [
        ['--upstream-ca', '/nonexistent.pem'],
        'carapace: --upstream-ca /nonexistent.pem: cannot read that file\n',
      ],
      [['--audit-rotate', '16Mi'], 'carapace: --audit-rotate 16Mi: expected SIZE:FILES, like 16Mi:4\n'],
      [
        ['--audit-rotate', '4Ki:4'],
        'carapace: --audit-rotate 4Ki:4: a file of at least 64Ki (a few hundred lines)\n',
      ],
      [['--audit-rotate', '16Mi:0'], 'carapace: --audit-rotate 16Mi:0: keep from 1 to 1000 files\n'],
      [['--log-rotate', '16Mi'], 'carapace: --log-rotate 16Mi: expected SIZE:FILES, like 16Mi:2\n'],
      [['--log-rotate', '512Ki:2'], 'carapace: --log-rotate 512Ki:2: a file of 1Mi to 1Ti\n'],
      [['--log-rotate', '16Mi:1'], 'carapace: --log-rotate 16Mi:1: keep from 2 to 1000 files\n'],
      [['--log-rotate', '16Mi:2:3'], 'carapace: --log-rotate 16Mi:2:3: expected SIZE:FILES, like 16Mi:2\n'],
    ] as const) {
      const r = cli(['gateway', 'start', ...args]);
      expect(r.stderr).toBe(line);
      expect(r.status).toBe(2);
    }
    expect(existsSync(stored)).toBe(false);
    expect(cli(['gateway', 'status']).status).toBe(3); // none started
    // A script that asked for JSON gets JSON when none answers too.
    const none = cli(['gateway', 'status', '-o', 'json']);
    expect(none.status).toBe(3);
    expect(JSON.parse(none.stdout)).toMatchObject({ running: false });
    // `carapace run` says the same of the same option.
    const run = cliAs(home, [
      'run',
      '--policy',
      '/dev/null',
      '--allow-local',
      'localhost:11434',
      '--',
      'true',
    ]);
    expect(run.stderr).toBe(
      'carapace: --allow-local "localhost:11434": expected IP:PORT or [IPv6]:PORT, e.g. 127.0.0.1:11434\n',
    );
    expect(run.status).toBe(2);
  });

  it('a sandbox reaches a loopback upstream only while the gateway trusts it; a restart keeps the options', async () => {
    const url = `http://up.test:${up.httpPort}/x`;
    const options = `--resolve up.test=127.0.0.1 --allow-local 127.0.0.1:${up.httpPort}`;
    const start = cli(['gateway', 'start', ...options.split(' ')]);
    expect(start.stderr).toBe('');
    expect(start.stdout).toMatch(
      new RegExp(`^gateway pid \\d+, .*\\noptions: ${options.replace(/\./g, '\\.')}\\n$`),
    );

    const policy = join(sharedTempDir(), 'web.yaml');
    writeFileSync(
      policy,
      `${FS_POLICY}network_policies:\n  up:\n    name: up\n    endpoints:\n      - { host: up.test, port: ${up.httpPort} }\n`,
    );
    const create = cli([
      'sandbox',
      'create',
      '--name',
      'web',
      '--policy',
      policy,
      '--',
      'python3',
      '-c',
      REQUEST_AGENT,
    ]);
    expect(create.stderr).toBe('');
    const view = JSON.parse(cli(['sandbox', 'get', 'web', '-o', 'json']).stdout) as {
      id: string;
      workspace: string;
    };
    const ask = requester(view.workspace);
    expect(await ask(url)).toBe('200');

    // Stopped and started with no options: the kept ones. The sandbox ran on and is re-adopted.
    expect(cli(['gateway', 'stop']).status).toBe(0);
    const again = cli(['gateway', 'start']);
    expect(again.stdout).toContain(`\noptions: ${options}\n`);
    expect(await ask(url)).toBe('200');
    // Asking a running gateway for other options changes nothing and says how.
    const other = cli(['gateway', 'start', '--reset-options', '--resolve', 'up.test=127.0.0.1']);
    expect(other.stderr).toBe(
      `carapace: a gateway already runs (pid ${JSON.parse(cli(['gateway', 'status', '-o', 'json']).stdout).pid}) with other options (${options}): stop it first (carapace gateway stop; its sandboxes run on), then start it with the new ones\n`,
    );
    expect(other.status).toBe(2);
    expect(JSON.parse(readFileSync(stored, 'utf8'))).toEqual({ options: options.split(' ') });

    // Without --allow-local the same request, by the same policy, is refused as SSRF, and audited.
    expect(cli(['gateway', 'stop']).status).toBe(0);
    const without = cli(['gateway', 'start', '--reset-options', '--resolve', 'up.test=127.0.0.1']);
    expect(without.stdout).toContain('\noptions: --resolve up.test=127.0.0.1\n');
    expect(await ask(url)).toBe('403');
    const refusals = readAudit(join(home, 'state', 'audit', `${view.id}.jsonl`)).filter(
      (e) => e.class_uid === 4001 && e.disposition_id === 2,
    );
    expect(refusals.at(-1)?.message).toMatch(/127\.0\.0\.1/);
    expect(readFileSync(join(view.workspace, 'starts'), 'utf8')).toBe('start\n'); // one agent throughout
  });
});
