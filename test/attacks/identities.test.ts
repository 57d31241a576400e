/**
 * Identities are never reused while anything of the old owner remains (docs/sandbox.md,
 * "Identity"). Each attack shows a uid handed on: across two state directories on one host, and
 * from a sandbox whose kept workspace still holds its files to the next sandbox.
 */
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { freshHome } from '../helpers/cli.js';
import { requires } from '../helpers/premises.js';
import { runInSandbox, sharedTempDir } from '../helpers/sandbox.js';

describe('sandbox uids', () => {
  it('two state directories on one host never hand out the same uid', (ctx) => {
    requires(ctx, 'root');
    const owners = [freshHome(), freshHome()].map((home) => {
      const ws = sharedTempDir('carapace-ws-');
      const r = runInSandbox(
        ['sh', '-c', 'echo mine > /sandbox/f'],
        ['--name', 'same', '--workspace', ws],
        home,
      );
      expect(r.status).toBe(0);
      return statSync(join(ws, 'f')).uid;
    });
    expect(owners[0]).not.toBe(owners[1]);
  });

  it('a uid whose kept workspace still holds its files is not handed to the next sandbox', (ctx) => {
    requires(ctx, 'root');
    const home = freshHome();
    const kept = sharedTempDir('carapace-ws-');
    const first = runInSandbox(
      ['sh', '-c', 'umask 077 && echo top-secret > /sandbox/secret'],
      ['--workspace', kept],
      home,
    );
    expect(first.status).toBe(0);
    const oldUid = statSync(join(kept, 'secret')).uid;
    // The next sandbox reaches the kept workspace read-only (a user's mount, or a policy that
    // binds its parent): with the old uid it would read the 0600 file.
    const next = runInSandbox(
      ['sh', '-c', 'id -u; cat /old/secret; stat -c %u /sandbox'],
      ['--mount', `${kept}:/old:ro`],
      home,
    );
    expect(next.stdout).not.toContain('top-secret');
    // And it runs as another host uid (its own workspace's owner is not the old uid).
    expect(statSync(kept).uid).toBe(oldUid);
  });
});
