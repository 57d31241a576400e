/**
 * `carapace rules approve --edit` writes the proposal above its rule as `#` lines, in the file the
 * operator saves to approve. What the sandbox chose (its binary's path, which may hold a newline)
 * must stay inside those comment lines: a newline would put a YAML line of the agent's below the
 * `#`, a key of the rule the operator approves without having typed it.
 */
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { editorHead, type ProposalView } from '../../src/cli/operator/rules-command.js';

const rule = {
  kind: 'endpoint' as const,
  host: 'api.example.com',
  port: 443,
  binaries: ['/usr/bin/curl'],
  policyKey: 'api_example_com',
  credentials: [],
  summary: 'connect api.example.com:443 by /usr/bin/curl',
};

function proposal(binary: string): ProposalView {
  return {
    id: 7,
    sandbox: 'web',
    owner: 0,
    status: 'pending',
    source: 'denial',
    level: 'connect',
    host: 'api.example.com',
    port: 443,
    binary,
    ancestors: [],
    method: null,
    pathPattern: null,
    hits: 1,
    firstSeen: '2026-12-02T00:00:00.000Z',
    lastSeen: '2026-12-02T00:00:00.000Z',
    samples: [],
    policyRev: 1,
    rule,
    risks: [],
    rationale: null,
    decidedBy: null,
    decidedAt: null,
    quietUntil: null,
    appliedRev: null,
    outcome: null,
  };
}

describe('the editor file of approve --edit', () => {
  it("keeps a binary's newline inside its comment line: nothing of the agent's becomes a key", () => {
    const head = editorHead(proposal('/sandbox/x\nhost: "*"\rport: 1'), rule);
    for (const line of head) expect(line).toMatch(/^# [^\n\r]*$/);
    expect(head[0]).toContain('/sandbox/x\\x0ahost: "*"\\x0dport: 1');
    // The file as written: the head, then the rule; the agent's text adds no key.
    expect(parse(`${head.join('\n')}\nbinaries: [/usr/bin/curl]\n`)).toEqual({ binaries: ['/usr/bin/curl'] });
  });
});
