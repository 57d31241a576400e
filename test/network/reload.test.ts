/**
 * Issue 4 acceptance: saving the policy file changes a running sandbox's network at once. A host
 * removed while a kept-alive L7 connection is open is refused on its next request; an open raw
 * tunnel to it is closed. Changes to static sections, and invalid files, are refused with a warning.
 */
import { chmodSync, copyFileSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startUpstreams, type Upstreams } from '../proxy/harness.js';

import { FS_POLICY, readAudit, upstreamOptions, runCli } from '../helpers/network.js';
import { sharedTempDir } from '../helpers/sandbox.js';

let up: Upstreams;
beforeAll(async () => {
  up = await startUpstreams();
});
afterAll(() => up.close());

/** The upstream CA where the sandbox's uid can read it (a raw tunnel's TLS is the client's own). */
function publicCopy(file: string): string {
  const copy = join(sharedTempDir(), 'upstream-ca.pem');
  copyFileSync(file, copy);
  chmodSync(copy, 0o644);
  return copy;
}

async function waitFor(what: string, check: () => boolean, timeoutMs = 30_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

const endpoints = (list: string) => `${FS_POLICY}network_policies:
  web:
    name: web
    endpoints:
${list}`;

describe('hot reload of the network policy', () => {
  it('refuses the next kept-alive request and closes the raw tunnel once the host is removed', async () => {
    const dir = sharedTempDir();
    const ws = sharedTempDir('carapace-ws-');
    const policy = join(dir, 'policy.yaml');
    const audit = join(dir, 'audit.jsonl');
    const both = `      - { host: keep.test, port: ${up.httpPort}, protocol: rest, access: full }
      - { host: raw.test, port: ${up.httpsPort}, access: full }
`;
    writeFileSync(policy, endpoints(both));
    const script = [
      'import http.client, os, socket, time',
      'c = http.client.HTTPConnection("127.0.0.1", 3128)',
      `c.request("GET", "http://keep.test:${up.httpPort}/one"); r = c.getresponse(); r.read(); print(r.status, flush=True)`,
      't = socket.create_connection(("127.0.0.1", 3128))',
      `t.sendall(b"CONNECT raw.test:${up.httpsPort} HTTP/1.1\\r\\nHost: raw.test:${up.httpsPort}\\r\\n\\r\\n")`,
      'print(t.recv(4096).split(b"\\r\\n")[0].decode(), flush=True)',
      'import ssl',
      'ctx = ssl.create_default_context(cafile="/opt/upstream-ca.pem")',
      't = ctx.wrap_socket(t, server_hostname="raw.test")',
      // A second tunnel, accepted but still waiting for its ClientHello when the policy changes.
      'p = socket.create_connection(("127.0.0.1", 3128))',
      `p.sendall(b"CONNECT raw.test:${up.httpsPort} HTTP/1.1\\r\\nHost: raw.test:${up.httpsPort}\\r\\n\\r\\n")`,
      'p.recv(4096)',
      'open("/sandbox/ready", "w").close()',
      'while not os.path.exists("/sandbox/go"): time.sleep(0.02)',
      'try:',
      '    ctx.wrap_socket(p, server_hostname="raw.test").recv(1); print("pending tunnel open")',
      'except (ssl.SSLError, OSError):',
      '    print("pending tunnel closed")',
      `c.request("GET", "http://keep.test:${up.httpPort}/two"); r = c.getresponse(); r.read(); print(r.status, flush=True)`,
      't.settimeout(20)',
      'try:',
      '    print("tunnel closed" if t.recv(1) == b"" else "tunnel open")',
      'except socket.timeout:',
      '    print("tunnel open")',
      'except (ssl.SSLError, OSError):',
      '    print("tunnel closed")',
    ].join('\n');
    const run = runCli([
      'run',
      '--policy',
      policy,
      '--workspace',
      ws,
      '--audit',
      audit,
      ...upstreamOptions(['keep.test', 'raw.test'], [up.httpPort, up.httpsPort], up.caFile),
      '--mount',
      `${publicCopy(up.caFile)}:/opt/upstream-ca.pem:ro`,
      '--',
      'python3',
      '-c',
      script,
    ]);
    await waitFor('the agent to be connected', () => existsSync(join(ws, 'ready')));
    writeFileSync(policy, endpoints(`      - { host: unrelated.test, port: 443, access: full }\n`));
    await waitFor('the reload', () =>
      readAudit(audit).some((e) => e.class_uid === 5019 && e.activity_id === 1),
    );
    writeFileSync(join(ws, 'go'), '');
    const r = await run;
    expect(r.stderr).toBe('');
    expect(r.stdout.trim().split('\n')).toEqual([
      '200',
      'HTTP/1.1 200 Connection Established',
      'pending tunnel closed',
      '403',
      'tunnel closed',
    ]);
    const events = readAudit(audit);
    const reload = events.find((e) => e.class_uid === 5019 && e.activity_id === 1);
    expect(reload?.unmapped.closed_tunnels).toBe(1);
    // The apply unit says where the change came from (src/runtime/policy-apply.ts).
    expect(reload?.unmapped).toMatchObject({ source: 'file', file: policy });
    expect(reload?.message).toMatch(/^a save of .*policy\.yaml: network policy generation 2 in force$/);
    expect(events.some((e) => e.class_uid === 4001 && e.activity_id === 2)).toBe(true);
    expect(up.seen.some((s) => s.url === '/two')).toBe(false);
  });

  it('refuses a change to a static section, and an invalid file, keeping the running policy', async () => {
    const dir = sharedTempDir();
    const ws = sharedTempDir('carapace-ws-');
    const policy = join(dir, 'policy.yaml');
    const audit = join(dir, 'audit.jsonl');
    const original = endpoints(`      - { host: keep.test, port: ${up.httpPort}, access: full }\n`);
    writeFileSync(policy, original);
    const script = [
      'import os, time, urllib.request as u',
      'def get():',
      '    try:',
      `        return u.urlopen("http://keep.test:${up.httpPort}/still").status`,
      '    except Exception as e:',
      '        return getattr(e, "code", str(e))',
      'open("/sandbox/ready", "w").close()',
      'while not os.path.exists("/sandbox/go"): time.sleep(0.02)',
      'print(get())',
    ].join('\n');
    const run = runCli([
      'run',
      '--policy',
      policy,
      '--workspace',
      ws,
      '--audit',
      audit,
      ...upstreamOptions(['keep.test'], [up.httpPort], up.caFile),
      '--',
      'python3',
      '-c',
      script,
    ]);
    await waitFor('the agent', () => existsSync(join(ws, 'ready')));
    writeFileSync(
      policy,
      original.replace('read_write: [/sandbox, /tmp]', 'read_write: [/sandbox, /tmp, /var/tmp]'),
    );
    await waitFor(
      'the first refusal',
      () => readAudit(audit).filter((e) => e.class_uid === 5019).length >= 1,
    );
    writeFileSync(policy, original.replace('network_policies:', 'network_policies:\n  bad: [unclosed'));
    await waitFor(
      'the second refusal',
      () => readAudit(audit).filter((e) => e.class_uid === 5019).length >= 2,
    );
    writeFileSync(join(ws, 'go'), '');
    const r = await run;
    expect(r.stdout.trim()).toBe('200');
    const warnings = r.stderr.trim().split('\n');
    expect(warnings[0]).toMatch(
      /policy change refused, the running policy stays: filesystem_policy cannot change while the sandbox runs/,
    );
    expect(warnings[1]).toMatch(
      new RegExp(`policy change refused, the running policy stays: ${policy}:\\d+:\\d+: `),
    );
    expect(
      readAudit(audit)
        .filter((e) => e.class_uid === 5019)
        .every((e) => e.activity_id === 99),
    ).toBe(true);
  });
});

/**
 * The watch's warning quotes the policy file's path (a save that does not parse is refused at its
 * file:line:col): a path with an escape sequence and a right-to-left override is shown escaped
 * (src/policy/printable.ts), on one line.
 */
describe('a refused save of a policy file whose path has control characters', () => {
  it('warns with the path escaped', async () => {
    const dir = join(sharedTempDir(), 'p\x1b]0;x\x07\u202eq');
    mkdirSync(dir, { mode: 0o711 });
    const policy = join(dir, 'policy.yaml');
    const audit = join(sharedTempDir(), 'audit.jsonl');
    const ws = sharedTempDir('carapace-ws-');
    const original = `${FS_POLICY}network_policies: {}\n`;
    writeFileSync(policy, original);
    const run = runCli([
      'run',
      '--policy',
      policy,
      '--workspace',
      ws,
      '--audit',
      audit,
      '--',
      'sh',
      '-c',
      'touch /sandbox/ready; while [ ! -e /sandbox/go ]; do sleep 0.02; done',
    ]);
    await waitFor('the agent', () => existsSync(join(ws, 'ready')));
    writeFileSync(policy, original.replace('network_policies: {}', 'network_policies:\n  bad: [unclosed'));
    await waitFor('the refusal', () => readAudit(audit).some((e) => e.class_uid === 5019));
    writeFileSync(join(ws, 'go'), '');
    const r = await run;
    expect(r.status).toBe(0);
    const shown = policy.replace('\x1b', '\\x1b').replace('\x07', '\\x07').replace('\u202e', '\\u{202e}');
    expect(r.stderr).toMatch(
      new RegExp(
        `^carapace: policy change refused, the running policy stays: ${escapeRegExp(shown)}:\\d+:\\d+: [^\\n]*\\n$`,
      ),
    );
  });
});

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
