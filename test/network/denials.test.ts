/**
 * Issue 4 acceptance: what the proxy and the kernel refuse, from inside a real sandbox, with the
 * refusal's audit event where the refusal is ours.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startUpstreams, type Upstreams } from '../proxy/harness.js';

import { networkPolicy, readAudit, upstreamOptions, type AuditLine, runCli } from '../helpers/network.js';
import { sharedTempDir } from '../helpers/sandbox.js';

let up: Upstreams;
beforeAll(async () => {
  up = await startUpstreams();
});
afterAll(() => up.close());

const NAMES = ['api.test', 'git-only.test', 'raw.test', 'audit.test'];

function policy(): string {
  return networkPolicy(`  api:
    name: api
    endpoints:
      - host: api.test
        port: ${up.httpPort}
        protocol: rest
        rules:
          - allow: { method: GET, path: "/repos/**" }
          - allow: { method: POST, path: "/repos/**" }
        deny_rules:
          - { method: POST, path: "/repos/*/secrets/**" }
      - { host: api.test, port: ${up.httpsPort}, protocol: rest, access: read-only }
      - { host: raw.test, port: ${up.httpsPort}, access: full }
      - host: audit.test
        port: ${up.httpPort}
        protocol: rest
        enforcement: audit
        access: read-only
    binaries: [ { path: /usr/bin/curl }, { path: /usr/bin/python3.11 } ]
  git_only:
    name: git_only
    endpoints:
      - { host: git-only.test, port: ${up.httpPort} }
    binaries: [ { path: /usr/bin/git } ]
`);
}

interface Outcome {
  stdout: string;
  audit: AuditLine[];
}

async function inside(script: string[]): Promise<Outcome> {
  const audit = join(sharedTempDir(), 'audit.jsonl');
  const r = await runCli([
    'run',
    '--policy',
    policy(),
    '--audit',
    audit,
    ...upstreamOptions(NAMES, [up.httpPort, up.httpsPort], up.caFile),
    '--',
    ...script,
  ]);
  return { stdout: r.stdout, audit: readAudit(audit) };
}

const status = (url: string, extra = '') =>
  `curl -sS --path-as-is ${extra} -o /dev/null -w '%{http_code}\\n' '${url}'`;
const blocked = (a: AuditLine[], cls: number) =>
  a.filter((e) => e.class_uid === cls && e.disposition_id === 2);

/** Python that talks raw HTTP to the relay at 127.0.0.1:3128 and prints the status line. */
function rawProxy(request: string): string[] {
  return [
    'python3',
    '-c',
    `import socket\ns = socket.create_connection(("127.0.0.1", 3128))\ns.sendall(${JSON.stringify(request)}.encode())\nprint(s.recv(65536).decode("latin-1").split("\\r\\n")[0])`,
  ];
}

describe('refused at connection level', () => {
  it('wrong port, and a binary the policy does not list (git only; curl refused)', async () => {
    const o = await inside([
      'sh',
      '-c',
      [status(`http://api.test:1/`), status(`http://git-only.test:${up.httpPort}/`)].join('; '),
    ]);
    expect(o.stdout.trim().split('\n')).toEqual(['403', '403']);
    const reasons = blocked(o.audit, 4001).map((e) => String(e.unmapped.reason));
    expect(reasons[0]).toMatch(/api\.test:1/);
    expect(reasons[1]).toMatch(/\/usr\/bin\/curl/);
  });

  it('a direct connection to an IP that bypasses the proxy has no route (Landlock), and is not seen upstream', async () => {
    const before = up.seen.length;
    const o = await inside([
      'sh',
      '-c',
      `curl -sS --noproxy '*' --max-time 5 http://127.0.0.1:${up.httpPort}/direct; echo "exit=$?"`,
    ]);
    expect(o.stdout).toMatch(/exit=7/); // curl: failed to connect
    expect(up.seen.length).toBe(before);
  });

  it('UDP and DNS have nowhere to go', async () => {
    const o = await inside([
      'python3',
      '-c',
      [
        'import socket, errno',
        'def attempt(f):',
        '    try:',
        '        f(); print("ok")',
        '    except OSError as e:',
        '        print(type(e).__name__, errno.errorcode.get(e.errno, e.errno))',
        'attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("192.0.2.53", 53)))',
        'attempt(lambda: socket.getaddrinfo("example.com", 443))',
      ].join('\n'),
    ]);
    const [udp, dns] = o.stdout.trim().split('\n');
    expect(udp).toBe('OSError ENETUNREACH');
    expect(dns).toMatch(/^gaierror/);
  });
});

describe('refused by the proxy: smuggling and path tricks', () => {
  it('CL+TE smuggling', async () => {
    const o = await inside(
      rawProxy(
        `POST http://api.test:${up.httpPort}/repos/x HTTP/1.1\r\nHost: api.test:${up.httpPort}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
      ),
    );
    expect(o.stdout.trim()).toMatch(/^HTTP\/1\.1 400/);
    expect(blocked(o.audit, 4001).length + blocked(o.audit, 4002).length).toBeGreaterThan(0);
  });

  it('a Host header that differs from the request target', async () => {
    const o = await inside(
      rawProxy(
        `GET http://api.test:${up.httpPort}/repos/x HTTP/1.1\r\nHost: elsewhere.test\r\nConnection: close\r\n\r\n`,
      ),
    );
    expect(o.stdout.trim()).toMatch(/^HTTP\/1\.1 (400|403)/);
    expect(blocked(o.audit, 4001).length + blocked(o.audit, 4002).length).toBeGreaterThan(0);
  });

  it('/a/../../etc and %2F', async () => {
    const o = await inside([
      'sh',
      '-c',
      [
        status(`http://api.test:${up.httpPort}/repos/../../etc/passwd`),
        status(`http://api.test:${up.httpPort}/repos/a%2F..%2F..%2Fadmin`),
      ].join('; '),
    ]);
    expect(o.stdout.trim().split('\n')).toEqual(['403', '403']);
    expect(blocked(o.audit, 4002).length).toBe(2);
    expect(up.seen.some((s) => s.url.includes('etc') || s.url.toLowerCase().includes('%2f'))).toBe(false);
  });

  it('SNI that differs from the CONNECT host closes a raw tunnel, with a finding', async () => {
    const o = await inside([
      'python3',
      '-c',
      [
        'import socket, ssl',
        's = socket.create_connection(("127.0.0.1", 3128))',
        `s.sendall(b"CONNECT raw.test:${up.httpsPort} HTTP/1.1\\r\\nHost: raw.test:${up.httpsPort}\\r\\n\\r\\n")`,
        'print(s.recv(4096).decode().split("\\r\\n")[0])',
        'ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE',
        'try:',
        '    t = ctx.wrap_socket(s, server_hostname="evil.test"); print("tls ok")',
        'except (ssl.SSLError, OSError) as e:',
        '    print("tls refused")',
      ].join('\n'),
    ]);
    const lines = o.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^HTTP\/1\.1 200/);
    expect(lines[1]).toBe('tls refused');
    expect(o.audit.some((e) => e.class_uid === 2004 && e.finding_info?.uid === 'sni-mismatch')).toBe(true);
  });
});

describe('L7 rules', () => {
  it('read-only refuses POST; GET /repos/** allowed, /admin not; deny_rules win; audit forwards and logs', async () => {
    const o = await inside([
      'sh',
      '-c',
      [
        status(`https://api.test:${up.httpsPort}/anything`, '-X POST'),
        status(`https://api.test:${up.httpsPort}/anything`),
        status(`http://api.test:${up.httpPort}/repos/a/b`),
        status(`http://api.test:${up.httpPort}/admin`),
        status(`http://api.test:${up.httpPort}/repos/a/secrets/k`, '-X POST'),
        status(`http://api.test:${up.httpPort}/repos/a/issues`, '-X POST'),
        status(`http://audit.test:${up.httpPort}/write`, '-X POST'),
      ].join('; '),
    ]);
    expect(o.stdout.trim().split('\n')).toEqual(['403', '200', '200', '403', '403', '200', '200']);
    const l7 = o.audit.filter((e) => e.class_uid === 4002);
    const audited = l7.find((e) => e.disposition_id === 17);
    expect(audited?.message).toMatch(/POST audit\.test\/write/);
    expect(up.seen.some((s) => s.url === '/write' && s.method === 'POST')).toBe(true);
  });
});
