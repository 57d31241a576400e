/**
 * A policy revision stored by an earlier Carapace, in a form this one refuses as new input, still
 * loads: the gateway starts, the sandbox runs on and starts again, `policy get` shows the text as
 * read, and it can be edited. Sent again as new input, the same text gets the clear refusal.
 */
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { afterAll, describe, expect, it } from 'vitest';
import { freshHome } from '../helpers/cli.js';
import { cliAs, startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { FS_POLICY } from '../helpers/network.js';
import { holds } from '../helpers/premises.js';
import { policyFile } from '../helpers/sandbox.js';

const NOTE =
  'an inference section without routes (routes: {}), accepted before, is read as no inference ' +
  'section: as then, every model call is refused';

describe.skipIf(!holds('root'))('a policy revision an earlier Carapace stored', () => {
  const gateways: TestGateway[] = [];
  afterAll(async () => {
    for (const gw of gateways) await gw.stop();
  });
  const view = (home: string) =>
    JSON.parse(cliAs(home, ['sandbox', 'get', 'old', '-o', 'json']).stdout) as {
      state: string;
      pid?: number;
    };

  it('with an inference section without routes: the gateway starts, the sandbox runs on, policy get shows it', async () => {
    const home = freshHome();
    const first = await startTestGateway([], home);
    gateways.push(first);
    const text = `# the user's own comment\n${FS_POLICY}network_policies: {}\n`;
    const created = cliAs(home, [
      'sandbox',
      'create',
      '--name',
      'old',
      '--policy',
      policyFile(text),
      '--',
      'sleep',
      '600',
    ]);
    expect(created.status, created.stderr).toBe(0);
    await first.stop();

    // The revision as the earlier version stored it (`sandbox create --policy` of this file, before
    // `routes: {}` was refused): the file's text and that text's sha256.
    const old = `${text}inference:\n  routes: {}\n`;
    const db = new DatabaseSync(join(home, 'state', 'gateway.db'));
    const stored = db
      .prepare('UPDATE policy_revisions SET text = ?, hash = ? WHERE rev = 1')
      .run(old, createHash('sha256').update(old).digest('hex'));
    db.close();
    expect(stored.changes).toBe(1);

    const second = await startTestGateway([], home);
    gateways.push(second);
    // Re-adopted with its policy (a policy that did not load would have left it failed).
    expect(view(home).state).toBe('running');
    const noted = second
      .output()
      .split('\n')
      .filter((l) => l.includes('stored policy revision read as this version reads it'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(noted).toEqual([
      expect.objectContaining({ level: 'info', sandbox: 'old', revision: 1, note: NOTE }),
    ]);
    // `policy get` shows the revision as read, saying so at the top; its hash is the stored one.
    const shown = cliAs(home, ['policy', 'get', 'old']);
    expect(shown.status, shown.stderr).toBe(0);
    expect(shown.stdout).toBe(`# carapace: ${NOTE}.\n${text}`);
    const json = JSON.parse(cliAs(home, ['policy', 'get', 'old', '-o', 'json']).stdout) as { hash: string };
    expect(json.hash).toBe(createHash('sha256').update(old).digest('hex'));
    expect(JSON.parse(cliAs(home, ['inference', 'get', 'old', '-o', 'json']).stdout)).toMatchObject({
      inference: null,
      routes: [],
    });

    // It starts again with it (a start reads the stored revision anew).
    const restarted = cliAs(home, ['sandbox', 'restart', 'old']);
    expect(restarted.status, restarted.stderr).toBe(0);
    expect(view(home).state).toBe('running');

    // An edit starts from the text as read: the new revision has no empty inference section.
    const updated = cliAs(home, ['policy', 'update', 'old', '--add-endpoint', 'kept.test:443']);
    expect(updated.status, updated.stderr).toBe(0);
    const latest = cliAs(home, ['policy', 'get', 'old']).stdout;
    expect(latest).toContain('kept.test');
    expect(latest).not.toMatch(/^inference:/m);

    // The old text is new input when sent again: refused at its line, nothing stored.
    const again = cliAs(home, ['policy', 'set', 'old', policyFile(old)]);
    expect(again.status).toBe(2);
    expect(again.stderr).toContain(
      'the inference section has no routes: every model call would be refused; add a route',
    );
    const revisions = JSON.parse(cliAs(home, ['policy', 'history', 'old', '-o', 'json']).stdout) as unknown[];
    expect(revisions).toHaveLength(2);
    expect(cliAs(home, ['sandbox', 'delete', 'old']).status).toBe(0);
  });
});
