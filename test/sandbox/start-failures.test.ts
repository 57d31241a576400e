/**
 * Start failures are ours, not the agent's (issue 9): when no agent ever ran, `carapace run`
 * exits 125 with one line that says why - bwrap's own message, or the init's - never the agent's
 * exit 1, and never a second, misleading line (a cgroup move of a process that is already gone).
 */
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { carapace, freshHome } from '../helpers/cli.js';
import { policyFile, readAudit, sharedTempDir } from '../helpers/sandbox.js';

describe('a sandbox that cannot start', () => {
  // Limits make the launcher move bwrap's child into a cgroup, which may find it gone already.
  const ROOT_READ_ONLY = `version: 1
filesystem_policy:
  read_only: [/]
  read_write: [/sandbox, /tmp]
limits: { pids: 100 }
`;

  it('bwrap fails setting it up: 125, and bwrap\u2019s reason as the one line', () => {
    const policy = policyFile(ROOT_READ_ONLY);
    const audit = join(sharedTempDir(), 'audit.jsonl');
    for (let i = 0; i < 3; i++) {
      const r = carapace(['run', '--policy', policy, '--audit', audit, '--', 'true'], { home: freshHome() });
      expect(r.status).toBe(125);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(/^carapace: the sandbox did not start: bwrap: Can't mkdir \/sandbox: /);
    }
    const failed = readAudit(audit).filter((e) => e.class_uid === 2004);
    expect(failed.length).toBe(3);
    for (const e of failed) expect(e.message).toMatch(/did not start: bwrap: Can't mkdir \/sandbox/);
  });

  it('a --mount source that does not exist: one line, before anything starts', () => {
    const missing = join(sharedTempDir(), 'missing');
    const r = carapace(['run', '--mount', `${missing}:/data`, '--', 'true'], { home: freshHome() });
    expect(r.status).toBe(2);
    expect(r.stderr).toBe(`carapace: --mount ${missing}:/data: ${missing} does not exist\n`);
  });
});
