/**
 * Credentials never travel in clear text to an endpoint the policy reaches over TLS (issue 10,
 * class 4). From inside a real sandbox, the agent asks the proxy to put the secret into a request
 * that leaves unencrypted: an absolute-form `http://` request (the forward proxy), and plain HTTP
 * inside a CONNECT tunnel, each to an endpoint that binds the credential and that the policy
 * reaches over TLS (`tls: terminate` here, port 443 in the second test). Before the fix the proxy
 * substituted the secret and sent it as it came — anyone on the path could read it; the upstream
 * below is a plain HTTP server standing for that path, and it must never see the secret. Baseline:
 * an endpoint that is plain HTTP by policy (another port, no TLS declared) gets the secret, by design.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startUpstreams, type Upstreams } from '../proxy/harness.js';
import { findings, python, py, reasonOf, refusals, runInside, type Outcome } from './proxy-sandbox.js';

let up: Upstreams;
beforeAll(async () => {
  up = await startUpstreams();
});
afterAll(() => up.close());

const PLACEHOLDER = 'carapace:cred:API_TOKEN';

/** tls.test is reached over TLS by policy (declared), plain.test is plain HTTP by policy. */
function network(): string {
  return `  api:
    name: api
    endpoints:
      - { host: tls.test, port: ${up.httpPort}, protocol: rest, access: full, tls: terminate, credentials: [API_TOKEN] }
      - { host: plain.test, port: ${up.httpPort}, protocol: rest, access: full, credentials: [API_TOKEN] }
      - { host: https.test, port: 443, protocol: rest, access: full, credentials: [API_TOKEN] }
`;
}

async function run(body: string): Promise<Outcome & { secret: string }> {
  const secret = `cpsecret_${randomBytes(16).toString('hex')}`;
  const o = await runInside(
    {
      network: network(),
      up,
      names: ['tls.test', 'plain.test', 'https.test'],
      options: ['--credential', 'API_TOKEN'],
      env: { API_TOKEN: secret },
    },
    python(body),
  );
  return { ...o, secret };
}

const forward = (host: string, port: number, path: string): string =>
  `GET http://${host}:${port}${path} HTTP/1.1\r\nHost: ${host}:${port}\r\nAuthorization: Bearer ${PLACEHOLDER}\r\nConnection: close\r\n\r\n`;
const sawSecret = (secret: string): boolean =>
  up.seen.some((s) => JSON.stringify(s).includes(secret) || s.url.includes('carapace'));

describe('a credential in a request that would leave in clear text', () => {
  it('forward (http://) and plain HTTP in a tunnel to an endpoint reached over TLS: 403, a cleartext-credential finding, nothing sent', async () => {
    const o = await run(`
exchange([${py(forward('tls.test', up.httpPort, '/forward'))}], 'forward')
s = tunnel('tls.test:${up.httpPort}', 'tunnel')
if s:
    converse(s, [${py(`GET /in-tunnel HTTP/1.1\r\nHost: tls.test:${up.httpPort}\r\nAuthorization: Bearer ${PLACEHOLDER}\r\nConnection: close\r\n\r\n`)}], 'tunnel')
exchange([${py(`GET http://tls.test:${up.httpPort}/query?token=${PLACEHOLDER} HTTP/1.1\r\nHost: tls.test:${up.httpPort}\r\nConnection: close\r\n\r\n`)}], 'query')
`);
    for (const label of ['forward', 'tunnel', 'query']) {
      const r = o.results.find((x) => x.label === label);
      expect(
        r?.responses.map((x) => x.status),
        label,
      ).toEqual([403]);
      const body = JSON.parse(r?.responses[0]?.body ?? '{}') as { reason?: string; hint?: string };
      expect(body.reason, label).toMatch(/API_TOKEN would travel in clear text/);
      expect(body.hint, label).toMatch(/https:\/\//);
    }
    expect(findings(o.audit)).toEqual([
      'cleartext-credential',
      'cleartext-credential',
      'cleartext-credential',
    ]);
    const refused = refusals(o.audit, 4002);
    expect(refused.map(reasonOf)).toEqual(Array(3).fill(expect.stringMatching(/clear text/)));
    expect(up.seen.some((s) => ['/forward', '/in-tunnel', '/query'].some((p) => s.url.startsWith(p)))).toBe(
      false,
    );
    expect(sawSecret(o.secret)).toBe(false);
    expect(JSON.stringify(o.audit)).not.toContain(o.secret);
  });

  it('port 443 is TLS by policy: a forward request to it with a placeholder is refused before any connection', async () => {
    const o = await run(`exchange([${py(forward('https.test', 443, '/on-443'))}], 'f443')`);
    const r = o.results.find((x) => x.label === 'f443');
    expect(r?.responses.map((x) => x.status)).toEqual([403]);
    expect(findings(o.audit)).toEqual(['cleartext-credential']);
    // Refused while judging the request: no upstream connection was attempted (no 4001 for it).
    expect(o.audit.filter((e) => e.class_uid === 4001 && e.disposition_id === 1)).toEqual([]);
  });

  it('baseline: an endpoint that is plain HTTP by policy gets the secret in clear text, by design', async () => {
    const o = await run(`exchange([${py(forward('plain.test', up.httpPort, '/plain-by-policy'))}], 'plain')`);
    expect(o.results[0]?.responses.map((x) => x.status)).toEqual([200]);
    const echoed = JSON.parse(o.results[0]?.responses[0]?.body ?? '{}') as {
      headers?: Record<string, string>;
    };
    expect(echoed.headers?.authorization).toBe(`Bearer ${o.secret}`);
    expect(findings(o.audit)).toEqual([]);
  });
});
