/**
 * Issue 4 acceptance, end to end: curl, node and python inside a real sandbox reach an allowed
 * host over HTTP and HTTPS through the relay and the proxy, and get the 403 JSON elsewhere.
 */
import { copyFileSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startUpstreams, type Upstreams } from '../proxy/harness.js';

import { networkPolicy, readAudit, upstreamOptions, runCli } from '../helpers/network.js';
import { sharedTempDir } from '../helpers/sandbox.js';

let up: Upstreams;
let upstreamCa: string;
beforeAll(async () => {
  up = await startUpstreams();
  // The sandbox needs the upstream's CA only for raw (not terminated) TLS tunnels.
  const dir = sharedTempDir();
  upstreamCa = join(dir, 'upstream-ca.pem');
  copyFileSync(up.caFile, upstreamCa);
  chmodSync(upstreamCa, 0o644);
});
afterAll(() => up.close());

function policy(): string {
  return networkPolicy(`  web:
    name: web
    endpoints:
      - { host: plain.test, port: ${up.httpPort}, access: read-only }
      - { host: l7.test, port: ${up.httpsPort}, protocol: rest, access: read-write }
      - { host: raw.test, port: ${up.httpsPort}, access: full }
    binaries:
      - { path: /usr/bin/curl }
      - { path: /usr/bin/node }
      - { path: /usr/bin/python3.11 }
`);
}

function run(audit: string, cmd: string[]) {
  return runCli([
    'run',
    '--policy',
    policy(),
    '--audit',
    audit,
    '--mount',
    `${upstreamCa}:/opt/upstream-ca.pem:ro`,
    ...upstreamOptions(['plain.test', 'l7.test', 'raw.test'], [up.httpPort, up.httpsPort], up.caFile),
    '--',
    ...cmd,
  ]);
}

const code = (url: string, extra = '') => `curl -sS ${extra} -o /dev/null -w '%{http_code}\\n' ${url}`;

describe('reaching allowed hosts from inside', () => {
  it('curl: HTTP forward, HTTPS terminated (L7) and HTTPS raw tunnel', async () => {
    const audit = join(sharedTempDir(), 'audit.jsonl');
    const r = await run(audit, [
      'sh',
      '-c',
      [
        code(`http://plain.test:${up.httpPort}/x`),
        code(`https://l7.test:${up.httpsPort}/y`),
        code(`https://raw.test:${up.httpsPort}/z`, '--cacert /opt/upstream-ca.pem'),
      ].join('; '),
    ]);
    expect(r.stderr).toBe('');
    expect(r.stdout.trim().split('\n')).toEqual(['200', '200', '200']);
    const paths = up.seen.map((s) => s.url);
    expect(paths).toEqual(expect.arrayContaining(['/x', '/y', '/z']));
    const connects = readAudit(audit).filter((e) => e.class_uid === 4001 && e.disposition_id === 1);
    expect(connects.map((e) => (e.dst_endpoint as { hostname: string }).hostname)).toEqual(
      expect.arrayContaining(['plain.test', 'l7.test', 'raw.test']),
    );
    expect(
      connects.every(
        (e) => (e.actor as { process: { file: { path: string } } }).process.file.path === '/usr/bin/curl',
      ),
    ).toBe(true);
  });

  it('node (fetch through NODE_USE_ENV_PROXY is not in Node 20: an explicit CONNECT) and python (urllib)', async () => {
    const audit = join(sharedTempDir(), 'audit.jsonl');
    const nodeScript = `
const http = require('http');
const tls = require('tls');
const req = http.request({ host: '127.0.0.1', port: 3128, method: 'CONNECT', path: 'l7.test:${up.httpsPort}' });
req.on('connect', (res, socket) => {
  const s = tls.connect({ socket, servername: 'l7.test', ca: require('fs').readFileSync(process.env.NODE_EXTRA_CA_CERTS) }, () => {
    s.write('GET /from-node HTTP/1.1\\r\\nHost: l7.test:${up.httpsPort}\\r\\nConnection: close\\r\\n\\r\\n');
  });
  let out = '';
  s.on('data', (d) => (out += d));
  s.on('end', () => console.log(out.split('\\r\\n')[0]));
});
req.end();`;
    const py = `import urllib.request as u; print(u.urlopen("https://l7.test:${up.httpsPort}/from-python").status)`;
    const r = await run(audit, ['sh', '-c', `node -e "$0" && python3 -c "$1"`, nodeScript, py]);
    expect(r.stderr).toBe('');
    expect(r.stdout.trim().split('\n')).toEqual(['HTTP/1.1 200 OK', '200']);
    expect(up.seen.map((s) => s.url)).toEqual(expect.arrayContaining(['/from-node', '/from-python']));
  });

  it('a host outside the policy gets the 403 JSON, audited', async () => {
    const audit = join(sharedTempDir(), 'audit.jsonl');
    const r = await run(audit, ['curl', '-sS', 'http://elsewhere.test/']);
    const body = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(body).toMatchObject({
      error: 'policy_denied',
      host: 'elsewhere.test',
      port: 80,
      binary: '/usr/bin/curl',
    });
    expect(String(body.hint)).toMatch(
      /^carapace policy explain POLICY_FILE --host elsewhere\.test --port 80 --binary \/usr\/bin\/curl /,
    );
    // A run has no gateway: no proposal to approve (test/proxy/denial-hints.test.ts).
    expect(String(body.hint)).not.toMatch(/rules|gateway/);
    const refused = readAudit(audit).find((e) => e.class_uid === 4001 && e.disposition_id === 2);
    expect(refused?.message).toMatch(/elsewhere\.test:80/);
  });
});
