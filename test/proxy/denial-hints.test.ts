/**
 * The hint of a 403 names the commands of the one who holds the sandbox: a `carapace run`'s user
 * edits the policy file (saved, it applies at once); a gateway sandbox's operator sees the denial
 * as a proposal (`carapace rules`) and changes the gateway's options, not a run's. A hint naming
 * both left each reader to guess which half was theirs.
 */
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { hintFor } from '../../src/proxy/session/responses.js';
import { CLI } from '../helpers/cli.js';

const denial = {
  host: 'evil.test',
  port: 443,
  binary: '/usr/bin/curl',
  reason: 'no policy allows evil.test:443',
};

/** The `carapace …` commands a hint names, as far as their subcommand. */
function commandsIn(hint: string): string[][] {
  return [...hint.matchAll(/carapace ([a-z-]+) ([a-z-]+)/g)].map((m) => [m[1] as string, m[2] as string]);
}

describe('the hint of a policy denial', () => {
  it('in a carapace run: the policy file, explained and edited; no proposal, no gateway', () => {
    const hint = hintFor(denial, 'run');
    expect(hint).toBe(
      'carapace policy explain POLICY_FILE --host evil.test --port 443 --binary /usr/bin/curl shows which entry decides; ' +
        'an edit of the policy file applies at once when saved',
    );
  });

  it('in a gateway sandbox: the proposal it became, and how to approve it; no policy file', () => {
    const hint = hintFor(denial, 'gateway');
    expect(hint).toBe(
      'this denial is now a proposal for the operator: carapace rules list shows it, carapace rules approve ID allows it (a new policy revision, live)',
    );
  });

  it('a loopback refusal names the option where the sandbox is held', () => {
    const local = {
      ...denial,
      host: 'localhost',
      port: 8080,
      hint: { kind: 'local' as const, address: '127.0.0.1' },
    };
    expect(hintFor(local, 'run')).toContain('--allow-local 127.0.0.1:8080 on carapace run');
    expect(hintFor(local, 'run')).not.toContain('gateway');
    expect(hintFor(local, 'gateway')).toContain(
      'carapace gateway start --allow-local 127.0.0.1:8080 (after carapace gateway stop; its sandboxes run on)',
    );
  });

  it('every command a hint names exists', () => {
    const local = { ...denial, hint: { kind: 'local' as const, address: '127.0.0.1' } };
    const named = new Set<string>();
    for (const d of [denial, local])
      for (const heldBy of ['run', 'gateway'] as const)
        for (const c of commandsIn(hintFor(d, heldBy))) named.add(c.join(' '));
    expect(named.size).toBeGreaterThan(3);
    for (const c of named) {
      const args = c.split(' ');
      // `carapace run --help` is the run command's own help; the others are subcommands.
      const r = spawnSync(process.execPath, [CLI, ...(args[0] === 'run' ? ['run'] : args), '--help']);
      expect({ command: c, status: r.status }).toEqual({ command: c, status: 0 });
    }
  });
});
