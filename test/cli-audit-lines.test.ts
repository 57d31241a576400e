/**
 * `carapace sandbox logs NAME --audit` at a terminal (or with -o text): one readable line per
 * event, not the raw OCSF JSON. A sandbox chooses some of what an event holds (the host it asked
 * for, an HTTP path, a reason quoting them): each field is escaped (src/policy/printable.ts).
 */
import { describe, expect, it } from 'vitest';
import { auditLine } from '../src/cli/sandbox/audit-line.js';
import { configChange, finding, httpActivity, lifecycle, networkActivity } from '../src/audit/ocsf.js';

const at = Date.parse('2026-12-02T17:40:01.123Z');
const json = (ev: object) => JSON.parse(JSON.stringify({ ...ev, time: at })) as Record<string, unknown>;

describe('an audit event as one line', () => {
  it.each([
    [
      networkActivity({
        sandbox: 's',
        disposition: 'blocked',
        host: 'evil.test',
        port: 443,
        reason: 'no policy allows evil.test:443',
      }),
      '2026-12-02T17:40:01.123Z  network refuse    refused  evil.test:443  no policy allows evil.test:443',
    ],
    [
      networkActivity({
        sandbox: 's',
        disposition: 'allowed',
        host: 'api.github.com',
        port: 443,
        policy: 'github',
      }),
      '2026-12-02T17:40:01.123Z  network open      allowed  api.github.com:443  connect api.github.com:443 allowed',
    ],
    [
      httpActivity({
        sandbox: 's',
        disposition: 'audited',
        method: 'POST',
        host: 'a.test',
        port: 443,
        path: '/v1/x',
        reason: 'rule r',
      }),
      '2026-12-02T17:40:01.123Z  http POST         logged   a.test:443/v1/x  rule r',
    ],
    [
      finding({
        sandbox: 's',
        kind: 'sni-mismatch',
        title: 'SNI b.test differs from CONNECT a.test',
        host: 'a.test',
        port: 443,
      }),
      '2026-12-02T17:40:01.123Z  finding sni-mismatch  -        a.test:443  SNI b.test differs from CONNECT a.test',
    ],
    [
      lifecycle({ sandbox: 's', activity: 'start', message: 'sandbox s started' }),
      '2026-12-02T17:40:01.123Z  lifecycle start   -        -  sandbox s started',
    ],
    [
      configChange({ sandbox: 's', accepted: false, message: 'policy refused: x' }),
      '2026-12-02T17:40:01.123Z  policy refuse     refused  -  policy refused: x',
    ],
  ])('%#', (ev, line) => {
    expect(auditLine(json(ev))).toBe(line);
  });

  it('what the sandbox chose is escaped: one line, no escape sequence reaches the terminal', () => {
    const ev = httpActivity({
      sandbox: 's',
      disposition: 'blocked',
      method: 'GET',
      host: 'a.test',
      port: 80,
      path: '/\x1b[2J\u202e\nx',
      reason: 'no rule allows GET /\x1b[2J',
    });
    const line = auditLine(json(ev));
    expect([...line].filter((c) => c.charCodeAt(0) < 0x20 || c === '\x7f' || c === '\u202e')).toEqual([]);
    expect(line).toContain('a.test:80/\\x1b[2J\\u{202e}\\x0ax');
  });

  it('an event of a class it does not know: its numbers and message', () => {
    expect(auditLine({ class_uid: 9999, activity_id: 7, time: at, message: 'm' })).toBe(
      '2026-12-02T17:40:01.123Z  class 9999/7      -        -  m',
    );
  });
});
