/**
 * What the sandbox controls is never printed raw (issue 10, class 8), from inside a real sandbox.
 * The agent runs a copy of curl whose file name carries terminal escapes (ESC ] title, ESC [ clear
 * screen), a newline followed by a forged audit line, a C1 control (U+009B, CSI on terminals that
 * take C1) and a right-to-left override. The policy allows only /usr/bin/curl, so the proxy refuses
 * it and quotes the name in the audit event's reason and in the 403 body. The audit file must stay
 * one JSON event per line, the forged line must not become an event, and every text meant for
 * people (reasons, titles, the 403 body) must show those characters escaped, never raw; the
 * structured field keeps the exact name.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { sharedTempDir } from '../helpers/sandbox.js';
import { startUpstreams, type Upstreams } from '../proxy/harness.js';
import { binaryOf, python, py, reasonOf, refusals, runInside } from './proxy-sandbox.js';

let up: Upstreams;
beforeAll(async () => {
  up = await startUpstreams();
});
afterAll(() => up.close());

const NAME = '/tmp/cu\x1b]0;owned\x07\x1b[2Jrl\n{"class_uid":4001,"forged":true}\u009b31m\u202egnp';
/** Anything a terminal could act on, or that would hide what follows it. */
// eslint-disable-next-line no-control-regex -- control characters are what the test looks for
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u2028-\u202e\u2066-\u2069]/u;

describe('sandbox-controlled text in audit events and answers', () => {
  it('a program name with escapes, a newline and a bidi override: one JSON line per event, escaped reasons, exact structured name', async () => {
    const auditFile = join(sharedTempDir(), 'audit.jsonl');
    const o = await runInside(
      {
        network: `  api:
    name: api
    endpoints:
      - { host: api.test, port: ${up.httpPort}, access: full }
    binaries: [ { path: /usr/bin/curl } ]
`,
        up,
        names: ['api.test'],
        auditFile,
      },
      python(`
import os, shutil, subprocess
name = ${py(NAME)}
shutil.copy('/usr/bin/curl', name)
os.chmod(name, 0o755)
out = subprocess.run([name, '-sS', 'http://api.test:${up.httpPort}/escapes'], capture_output=True).stdout
print(json.dumps(dict(label='body', body=out.decode('utf-8', 'replace'), responses=[], end='closed', port=0)))
`),
    );
    // Every line of the file is one JSON event; the forged line inside the name is not one.
    const lines = readFileSync(auditFile, 'utf8').split('\n').filter(Boolean);
    const events = lines.map((l) => JSON.parse(l) as { forged?: boolean });
    expect(events.some((e) => e.forged === true)).toBe(false);
    expect(lines.every((l) => !UNSAFE.test(l.replace(/\\u[0-9a-f]{4}/g, '')))).toBe(true);

    const [refused] = refusals(o.audit, 4001);
    expect(binaryOf(refused)).toBe(NAME);
    const reason = reasonOf(refused);
    expect(reason).toContain('is allowed only for other programs');
    expect(reason).not.toMatch(UNSAFE);
    expect(reason).toContain(
      '\\x1b]0;owned\\x07\\x1b[2Jrl\\x0a{"class_uid":4001,"forged":true}\\x9b31m\\u{202e}gnp',
    );
    expect(refused?.message ?? '').not.toMatch(UNSAFE);

    const body = JSON.parse(String(o.results.find((r) => r.label === 'body')?.body)) as Record<
      string,
      string
    >;
    expect(body.error).toBe('policy_denied');
    for (const field of ['binary', 'reason', 'hint']) expect(body[field], field).not.toMatch(UNSAFE);
    expect(body.binary).toContain('\\x1b]0;owned');
    expect(up.seen.some((s) => s.url === '/escapes')).toBe(false);
  });
});
