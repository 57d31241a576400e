/**
 * An agent for gateway sandboxes that makes requests when the test asks: for each /sandbox/go-N it
 * fetches the URL written there (through the proxy its HTTP_PROXY names), reads the whole body, and
 * writes the status, or the error, to /sandbox/out-N. It notes each of its starts in /sandbox/starts, so a test can tell
 * that one agent, never restarted, served every request.
 */
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, readFileSync, realpathSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { GatewayClient } from '../../src/cli/gateway/gateway-client.js';
import { startUpstreams, type Upstreams } from '../proxy/harness.js';
import { CLI } from './cli.js';
import { startTestGateway, type TestGateway } from './gateway.js';
import { FS_POLICY } from './network.js';

export const REQUEST_AGENT = [
  'import os, time, urllib.request as u',
  'open("/sandbox/starts", "a").write("start\\n")',
  'n = 0',
  'while True:',
  '    n += 1',
  '    go = f"/sandbox/go-{n}"',
  '    while not os.path.exists(go): time.sleep(0.02)',
  '    try:',
  '        r = u.urlopen(open(go).read().strip(), timeout=30)',
  '        r.read()',
  '        s = r.status',
  '    except Exception as e:',
  '        s = getattr(e, "code", None) or repr(e)',
  '    open(f"/sandbox/out-{n}.tmp", "w").write(str(s))',
  '    os.rename(f"/sandbox/out-{n}.tmp", f"/sandbox/out-{n}")',
].join('\n');

/** Asks the agent whose workspace is `workspace` to fetch `url`; resolves with what it got. */
export function requester(workspace: string): (url: string) => Promise<string> {
  let n = 0;
  return async (url) => {
    n++;
    const go = join(workspace, `go-${n}`);
    writeFileSync(`${go}.tmp`, `${url}\n`);
    chmodSync(`${go}.tmp`, 0o644);
    renameSync(`${go}.tmp`, go);
    const out = join(workspace, `out-${n}`);
    while (!existsSync(out)) await new Promise((r) => setTimeout(r, 25));
    return readFileSync(out, 'utf8');
  };
}

/** A gateway whose sandbox `web` runs REQUEST_AGENT (requestScene). */
export interface RequestScene {
  gw: TestGateway;
  up: Upstreams;
  /** Has the agent fetch a URL; resolves with the status it got. */
  ask: (url: string) => Promise<string>;
  /** The upstreams' URL on a host the gateway resolves to them (a.test, b.test). */
  url: (host: string) => string;
  /**
   * Has python in the sandbox submit a proposal to policy.local, as an agent asking for a rule
   * would (`rationale`: its reason); resolves with the HTTP status and the body.
   */
  suggest: (host: string, rationale: string) => Promise<string>;
}

/** One POST from inside the sandbox: prints `STATUS BODY`. */
const SUGGEST = `import sys, urllib.request as u
req = u.Request("http://policy.local/v1/proposals", data=sys.argv[1].encode(), method="POST",
                headers={"Content-Type": "application/json"})
try:
    r = u.urlopen(req, timeout=20); print(r.status, r.read().decode())
except Exception as e:
    print(getattr(e, "code", "ERR"), e.read().decode() if hasattr(e, "read") else repr(e))
`;

/**
 * A gateway that resolves a.test and b.test to local upstreams, and one sandbox `web` running
 * REQUEST_AGENT whose policy reaches a.test only, and lets python ask policy.local for more: what
 * the operator's tests see refused, suggested, proposed and approved. `create` adds to the
 * sandbox's create request (forwards, …).
 */
export async function requestScene(create: Record<string, unknown> = {}): Promise<RequestScene> {
  const up = await startUpstreams();
  const gw = await startTestGateway([
    ...['a.test', 'b.test'].flatMap((h) => ['--resolve', `${h}=127.0.0.1`]),
    '--allow-local',
    `127.0.0.1:${up.httpPort}`,
  ]);
  const api = new GatewayClient({
    socket: join(gw.home, 'run', 'gateway.sock'),
    own: false,
    dirs: { state: join(gw.home, 'state'), run: join(gw.home, 'run') },
  });
  const view = await api.call<{ workspace: string }>('POST', '/v1/sandboxes', {
    name: 'web',
    command: ['python3', '-c', REQUEST_AGENT],
    policy:
      `${FS_POLICY}listen_ports: [8080]\nnetwork_policies:\n  web:\n    name: web\n    endpoints:\n      - { host: a.test, port: ${up.httpPort} }\n` +
      `  advisor:\n    name: advisor\n    endpoints:\n      - { host: policy.local, port: 80 }\n    binaries:\n      - { path: ${realpathSync('/usr/bin/python3')} }\n`,
    ...create,
  });
  const suggest = async (host: string, rationale: string) => {
    const body = JSON.stringify({ host, port: up.httpPort, rationale });
    const child = spawn(
      process.execPath,
      [CLI, 'sandbox', 'exec', 'web', '--', 'python3', '-c', SUGGEST, body],
      {
        env: { PATH: process.env.PATH, CARAPACE_HOME: gw.home, LANG: 'C.UTF-8' },
        stdio: ['ignore', 'pipe', 'inherit'],
      },
    );
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += String(d)));
    await new Promise((resolve) => child.once('close', resolve));
    return out.trim();
  };
  return {
    gw,
    up,
    ask: requester(view.workspace),
    url: (host) => `http://${host}:${up.httpPort}/x`,
    suggest,
  };
}
