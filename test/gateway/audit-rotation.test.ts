/**
 * A gateway's sandbox floods refusals to fill the host's disk through its audit trail (docs/gateway.md,
 * "The audit trail's size"; docs/security.md, Resources). A real gateway with `--audit-rotate
 * 128Ki:3`, a real sandbox whose agent asks the proxy for 1,500 hosts its policy does not list, and
 * the real `carapace sandbox logs --audit` reading the result. Without rotation its file grows by
 * every refusal (about 850 KiB here).
 */
import { spawn } from 'node:child_process';
import { existsSync, lstatSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GatewayClient } from '../../src/cli/gateway/gateway-client.js';
import { CLI } from '../helpers/cli.js';
import { cliAs, startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { FS_POLICY } from '../helpers/network.js';
import { holds } from '../helpers/premises.js';

const REFUSALS = 1_500;
const FLOOD_AGENT = [
  'import os, time, urllib.request as u',
  `for n in range(1, ${REFUSALS + 1}):`,
  '    try:',
  '        u.urlopen(f"http://d{n}.test/", timeout=30).read()',
  '    except Exception:',
  '        pass',
  'open("/sandbox/done.tmp", "w").write("done")',
  'os.rename("/sandbox/done.tmp", "/sandbox/done")',
  'time.sleep(1e9)',
].join('\n');

/** The CLI, its stdout read a chunk at a time with a pause between: a pipe that fills. */
async function slowly(
  home: string,
  args: string[],
): Promise<{ stdout: string; stderr: string; status: number | null }> {
  const child = spawn(process.execPath, [CLI, ...args], {
    env: { PATH: process.env.PATH, CARAPACE_HOME: home, LANG: 'C.UTF-8' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += String(d)));
  const exited = new Promise<number | null>((resolve) => child.once('close', resolve));
  let stdout = '';
  for await (const chunk of child.stdout) {
    stdout += String(chunk);
    await new Promise((r) => setTimeout(r, 20));
  }
  return { stdout, stderr, status: await exited };
}

interface Line {
  class_uid: number;
  disposition_id?: number;
  dst_endpoint?: { hostname?: string };
  finding_info?: { uid: string };
  unmapped: { lines?: number; bytes?: number; file?: string };
}

describe.skipIf(!holds('root'))('audit rotation in a gateway', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startTestGateway(['--audit-rotate', '128Ki:3']);
  });
  afterAll(async () => {
    cliAs(gw.home, ['sandbox', 'delete', 'flood']);
    await gw.stop();
  });

  it('a sandbox flooding refusals keeps its audit to SIZE × FILES, says what was dropped, and `sandbox logs --audit` reads across the rotation', async () => {
    const api = new GatewayClient({
      socket: join(gw.home, 'run', 'gateway.sock'),
      own: false,
      dirs: { state: join(gw.home, 'state'), run: join(gw.home, 'run') },
    });
    const view = await api.call<{ id: string; workspace: string }>('POST', '/v1/sandboxes', {
      name: 'flood',
      command: ['python3', '-c', FLOOD_AGENT],
      policy: `${FS_POLICY}network_policies:\n  one:\n    name: one\n    endpoints:\n      - { host: a.test, port: 80 }\n`,
    });
    const done = join(view.workspace, 'done');
    while (!existsSync(done)) await new Promise((r) => setTimeout(r, 100));

    // On disk: three files, none past 128 KiB.
    const auditDir = join(gw.home, 'state', 'audit');
    const files = readdirSync(auditDir).filter((n) => n.startsWith(view.id));
    expect(files.sort()).toEqual([`${view.id}.jsonl`, `${view.id}.jsonl.1`, `${view.id}.jsonl.2`]);
    const sizes = files.map((n) => lstatSync(join(auditDir, n)).size);
    for (const size of sizes) expect(size).toBeLessThanOrEqual(128 * 1024);
    const onDisk = files
      .map((n) => readFileSync(join(auditDir, n), 'utf8'))
      .join('')
      .split('\n')
      .filter(Boolean).length;

    // The reader: every line of the three files, oldest first, the last refusals unbroken; all of
    // them through a pipe whose reader is slower than the CLI (the CLI waits for it to take them).
    const logs = await slowly(gw.home, ['sandbox', 'logs', 'flood', '--audit']);
    expect(logs.stderr).toBe('');
    expect(logs.status).toBe(0);
    const lines = logs.stdout
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Line);
    expect(lines.length).toBe(onDisk);
    const hosts = lines
      .filter((l) => l.class_uid === 4001 && l.disposition_id === 2)
      .map((l) => Number(/^d(\d+)\.test$/.exec(l.dst_endpoint?.hostname ?? '')?.[1]))
      .filter((n) => !Number.isNaN(n));
    const unique = hosts.filter((n, i) => i === 0 || n !== hosts[i - 1]);
    expect(unique.at(-1)).toBe(REFUSALS);
    expect(unique).toEqual(unique.map((_, i) => unique[0]! + i));
    expect(unique[0]).toBeGreaterThan(1); // the first ones were dropped

    // The drop is in the trail, with what it took.
    const drops = lines.filter((l) => l.finding_info?.uid === 'audit-dropped');
    expect(drops.length).toBeGreaterThan(0);
    expect(drops.at(-1)!.unmapped).toMatchObject({ file: `${view.id}.jsonl.2` });
    expect(drops.at(-1)!.unmapped.lines).toBeGreaterThan(50);
    expect(drops.at(-1)!.unmapped.bytes).toBeGreaterThan(120 * 1024);

    // --tail reads from the end, whichever file that is in.
    const tail = cliAs(gw.home, ['sandbox', 'logs', 'flood', '--audit', '--tail', '3']);
    expect(tail.stdout.split('\n').filter(Boolean)).toEqual(
      logs.stdout.split('\n').filter(Boolean).slice(-3),
    );

    // Deleting the sandbox removes every generation.
    expect(cliAs(gw.home, ['sandbox', 'delete', 'flood']).status).toBe(0);
    expect(readdirSync(auditDir).filter((n) => n.startsWith(view.id))).toEqual([]);
  }, 300_000);
});
