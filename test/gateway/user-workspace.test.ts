/**
 * A user's own workspace across starts (issue 13: always on). At its first start the workspace a
 * user gave (`--workspace`) is handed to the sandbox's uid, 0700; every later start checks the
 * path as the user again, who can no longer write it. Such a sandbox never started a second time:
 * not by `sandbox start`, `restart`, its restart policy, nor after a reboot (one check: launcher.ts, checkedPaths). A path that is the
 * sandbox's own (owned by its uid) passes; one owned by any other uid (another sandbox's, swapped
 * in by the user) is still refused.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI } from '../helpers/cli.js';
import { cliAs, makeUser, startTestGateway, type TestGateway, type TestUser } from '../helpers/gateway.js';
import { holds } from '../helpers/premises.js';

const reachable = () =>
  spawnSync(process.execPath, [CLI, '--version'], { uid: 65534, gid: 65534, encoding: 'utf8' }).status === 0;

describe.skipIf(!holds('root') || !reachable())("a user's workspace across starts", () => {
  let gw: TestGateway;
  let user: TestUser;
  const as = (args: string[]) => cliAs(gw.home, args, user.uid, user.gid);
  const home = () => `/home/${user.name}`;

  beforeAll(async () => {
    user = makeUser('cpwsu', ['carapace']);
    gw = await startTestGateway();
  });
  afterAll(async () => {
    await gw?.stop();
    user?.remove();
  });

  it('starts again (start, restart) with what it wrote', () => {
    const ws = join(home(), 'ws');
    const r = as(['sandbox', 'create', '--name', 'keep', '--workspace', ws, '--', 'sleep', 'infinity']);
    expect(r.status, r.stderr).toBe(0);
    expect(as(['sandbox', 'exec', 'keep', '--', 'sh', '-c', 'echo kept > /sandbox/note']).status).toBe(0);
    expect(as(['sandbox', 'stop', 'keep', '--grace', '0']).status).toBe(0);
    const started = as(['sandbox', 'start', 'keep']);
    expect(started.stderr).toBe('');
    expect(started.stdout).toBe('keep running\n');
    expect(as(['sandbox', 'exec', 'keep', '--', 'cat', '/sandbox/note']).stdout).toBe('kept\n');
    expect(as(['sandbox', 'restart', 'keep', '--grace', '0']).stdout).toBe('keep running\n');
  });

  it("refuses a path the user swapped for another sandbox's workspace", () => {
    const a = join(home(), 'wa');
    const b = join(home(), 'wb');
    for (const [name, ws] of [
      ['sa', a],
      ['sb', b],
    ] as const) {
      const r = as(['sandbox', 'create', '--name', name, '--workspace', ws, '--', 'sleep', 'infinity']);
      expect(r.status, r.stderr).toBe(0);
    }
    expect(as(['sandbox', 'stop', 'sb', '--grace', '0']).status).toBe(0);
    // The user owns their home: they may rename sb's workspace away and put a link to sa's there.
    const moved = spawnSync('sh', ['-c', `mv ${b} ${b}.old && ln -s ${a} ${b}`], {
      uid: user.uid,
      gid: user.gid,
      encoding: 'utf8',
    });
    expect(moved.status, moved.stderr).toBe(0);
    const refused = as(['sandbox', 'start', 'sb']);
    expect(refused.status).not.toBe(0);
    expect(refused.stderr).toMatch(
      new RegExp(`^carapace: --workspace ${b} is not yours to write \\(checked as uid ${user.uid}\\)\\n$`),
    );
  });
});
