/**
 * Live policy revisions (the "always on" issue, part 2), with a real system gateway, real users
 * (alice and bob, in the carapace group) and real sandboxes whose agent makes real requests through
 * the gateway's proxy to a loopback upstream: as `host.openshell.internal` (a host service a policy
 * names), and as a.test and b.test (`gateway run --resolve/--allow-local`, the operator's trust).
 * Acceptance: `policy history` shows every change with author and diff;
 * `policy rollback` applies the old revision live; a static-section change on a running sandbox is
 * refused with the sentence that says why.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GatewayClient, type GatewayError } from '../../src/cli/gateway/gateway-client.js';
import { CLI } from '../helpers/cli.js';
import { REQUEST_AGENT, requester } from '../helpers/gateway-agent.js';
import { cliAs, makeUser, startTestGateway, type TestGateway, type TestUser } from '../helpers/gateway.js';
import { FS_POLICY, readAudit, type AuditLine } from '../helpers/network.js';
import { holds } from '../helpers/premises.js';
import { sharedTempDir } from '../helpers/sandbox.js';
import { startUpstreams, type Upstreams } from '../proxy/harness.js';

const reachable = () =>
  spawnSync(process.execPath, [CLI, '--version'], { uid: 65534, gid: 65534, encoding: 'utf8' }).status === 0;

interface View {
  id: string;
  state: string;
  workspace: string;
  policyRev: number;
  createdAt: string;
}
interface Revision {
  rev: number;
  author: number;
  action: string;
  source: string;
  proposal: number | null;
  effect: string;
  diff: string[];
  restores: number | null;
  hash: string;
  current: boolean;
}

describe.skipIf(!holds('root') || !reachable())('live policy revisions in the gateway', () => {
  let gw: TestGateway;
  let up: Upstreams;
  let alice: TestUser;
  let bob: TestUser;
  let files: string;
  const as = (u: TestUser | null, args: string[]) => cliAs(gw.home, args, u?.uid ?? 0, u?.gid ?? 0);
  /** The API as `u` (their own socket: the gateway takes them for who the socket says). */
  const api = (u: TestUser | null) =>
    new GatewayClient({
      socket: u ? join(gw.home, 'run', 'users', `${u.uid}.sock`) : join(gw.home, 'run', 'gateway.sock'),
      own: false,
      dirs: { state: join(gw.home, 'state'), run: join(gw.home, 'run') },
    });
  const policy = (hosts: string[], extraReadOnly: string[] = []) =>
    `${FS_POLICY.replace('/bin, /etc]', ['/bin', '/etc', ...extraReadOnly].join(', ') + ']')}network_policies:
  web:
    name: web
    endpoints:
${hosts.map((h) => `      - { host: ${h}, port: ${up.httpPort}, protocol: rest, access: full }`).join('\n')}
`;
  /** A policy file the user can read (they pass it to the CLI). */
  const file = (name: string, text: string) => {
    const path = join(files, name);
    writeFileSync(path, text);
    chmodSync(path, 0o644);
    return path;
  };

  async function create(
    owner: TestUser,
    name: string,
    text: string,
    command = ['python3', '-c', REQUEST_AGENT],
  ) {
    return api(owner).call<View>('POST', '/v1/sandboxes', { name, command, policy: text });
  }

  /** Asks the agent of `view` to fetch http://HOST:PORT/x from the upstream. */
  function agent(view: View) {
    const ask = requester(view.workspace);
    return (host: string) => ask(`http://${host}:${up.httpPort}/x`);
  }

  const audit = (id: string): AuditLine[] => readAudit(join(gw.home, 'state', 'audit', `${id}.jsonl`));
  const history = (u: TestUser | null, name: string, extra: string[] = []) =>
    JSON.parse(as(u, ['policy', 'history', name, '-o', 'json', ...extra]).stdout) as Revision[];

  beforeAll(async () => {
    up = await startUpstreams();
    alice = makeUser('cppolal', ['carapace']);
    bob = makeUser('cppolbo', ['carapace']);
    files = sharedTempDir();
    gw = await startTestGateway([
      '--resolve',
      'a.test=127.0.0.1',
      '--resolve',
      'b.test=127.0.0.1',
      '--allow-local',
      `127.0.0.1:${up.httpPort}`,
    ]);
  });
  afterAll(async () => {
    await gw?.stop();
    await up?.close();
    alice?.remove();
    bob?.remove();
  });

  it('applies each revision live; a rollback brings the old one back live; history shows every change with author and diff', async () => {
    const view = await create(alice, 'web', policy(['a.test']));
    const ask = agent(view);
    expect(await ask('a.test')).toBe('200');
    expect(await ask('host.openshell.internal')).toBe('403'); // revision 1 refuses the host's service

    // Revision 2, by alice: a service on the host (docs/proxy.md, host.openshell.internal) is
    // allowed at once, in the same running sandbox.
    const update = as(alice, [
      'policy',
      'update',
      'web',
      '--add-endpoint',
      `host.openshell.internal:${up.httpPort}:full:rest`,
    ]);
    expect(update.stderr).toBe('');
    expect(update.status).toBe(0);
    expect(update.stdout).toMatch(/^web: policy revision 2, applied live \(network policy generation 2\)\n/);
    expect(update.stdout).toContain(
      `+ network_policies.allow_host_openshell_internal_${up.httpPort}: host.openshell.internal:${up.httpPort} rest access full`,
    );
    expect(await ask('host.openshell.internal')).toBe('200');

    // Revision 3: revision 1 again, live. The host's service is refused again; a.test still answers.
    const back = as(alice, ['policy', 'rollback', 'web', '--to', '1']);
    expect(back.stderr).toBe('');
    expect(back.stdout).toMatch(/^web: policy revision 3, applied live \(network policy generation 3\)\n/);
    expect(back.stdout).toContain(`- network_policies.allow_host_openshell_internal_${up.httpPort}:`);
    expect(await ask('host.openshell.internal')).toBe('403');
    expect(await ask('a.test')).toBe('200');
    // Never restarted: one agent served every request.
    const now = JSON.parse(as(alice, ['sandbox', 'get', 'web', '-o', 'json']).stdout) as View;
    expect(now).toMatchObject({ state: 'running', policyRev: 3 });
    expect(readFileSync(join(view.workspace, 'starts'), 'utf8')).toBe('start\n');

    // History: every revision, its author (alice, whoever asks), what it was, and its diff.
    const revs = history(alice, 'web');
    expect(
      revs.map((r) => [r.rev, r.author, r.action, r.source, r.proposal, r.effect, r.restores, r.current]),
    ).toEqual([
      [1, alice.uid, 'create', 'create', null, 'start', null, false],
      [2, alice.uid, 'update', 'update', null, 'live', null, false],
      [3, alice.uid, 'rollback', 'rollback', null, 'live', 1, true],
    ]);
    expect(revs[1]!.diff).toEqual([
      `+ network_policies.allow_host_openshell_internal_${up.httpPort}: host.openshell.internal:${up.httpPort} rest access full — for any program`,
    ]);
    expect(revs[2]!.diff).toEqual([revs[1]!.diff[0]!.replace(/^\+/, '-')]);
    expect(revs[2]!.hash).toBe(revs[0]!.hash); // the same text, a new revision
    const text = as(alice, ['policy', 'history', 'web']).stdout;
    expect(text).toMatch(
      new RegExp(
        `^rev 3 \\(current\\)  \\S+  uid ${alice.uid} \\(${alice.name}\\)  rollback to 1, applied live  sha256:[0-9a-f]{12}\\n  - network_policies`,
      ),
    );
    expect(text).toMatch(
      new RegExp(
        `rev 2  \\S+  uid ${alice.uid} \\(${alice.name}\\)  update, applied live  sha256:[0-9a-f]{12}\\n  \\+ network_policies`,
      ),
    );
    expect(text).toMatch(
      new RegExp(
        `rev 1  \\S+  uid ${alice.uid} \\(${alice.name}\\)  create, at start  sha256:[0-9a-f]{12}\\n  the policy the sandbox was created with\\n$`,
      ),
    );
    // Any revision's text, as stored.
    expect(as(alice, ['policy', 'get', 'web', '--rev', '1']).stdout).toBe(policy(['a.test']));
    expect(as(alice, ['policy', 'get', 'web']).stdout).toBe(policy(['a.test']));

    // Audited in the sandbox's trail: who, which revision, what it replaced.
    const changes = audit(view.id).filter((e) => e.class_uid === 5019);
    expect(
      changes.map((e) => [
        e.activity_id,
        e.unmapped.revision,
        e.unmapped.previous_revision,
        e.unmapped.author_uid,
      ]),
    ).toEqual([
      [1, 2, 1, alice.uid],
      [1, 3, 2, alice.uid],
    ]);
    expect(changes[1]!.unmapped).toMatchObject({ action: 'rollback', restores: 1, generation: 3 });
  });

  it('refuses a static-section change on a running sandbox with the sentence that says why, storing nothing', async () => {
    const marker = sharedTempDir('carapace-marker-');
    mkdirSync(join(marker, 'seen'));
    writeFileSync(join(marker, 'seen', 'it'), '');
    chmodSync(join(marker, 'seen'), 0o755);
    const ls = [
      'sh',
      '-c',
      `ls ${marker}/seen > /sandbox/ls.tmp 2>&1; mv /sandbox/ls.tmp /sandbox/ls.txt; exec sleep 600`,
    ];
    const view = await create(alice, 'fs', policy(['a.test']), ls);
    /** What the agent's ls saw at its latest start (waits for a start after the last call). */
    const listed = async () => {
      const path = join(view.workspace, 'ls.txt');
      while (!existsSync(path)) await new Promise((r) => setTimeout(r, 25));
      const text = readFileSync(path, 'utf8');
      rmSync(path);
      return text;
    };
    const wider = file('wider.yaml', policy(['a.test', 'b.test'], [marker]));

    const refused = as(alice, ['policy', 'set', 'fs', wider]);
    expect(refused.status).toBe(2);
    expect(refused.stdout).toBe('');
    expect(refused.stderr).toBe(
      'carapace: policy not changed: filesystem_policy cannot change while sandbox fs runs (it is fixed when the sandbox starts). ' +
        'Repeat it with --restart to store the change and restart the sandbox with it, or stop the sandbox first (carapace sandbox stop fs)\n',
    );
    // Nothing stored, nothing applied (the network part of the change included); the refusal audited.
    expect(history(alice, 'fs').map((r) => r.rev)).toEqual([1]);
    const refusal = audit(view.id).filter((e) => e.class_uid === 5019);
    expect(refusal).toHaveLength(1);
    expect(refusal[0]).toMatchObject({
      activity_id: 99,
      unmapped: {
        reason: 'static section changed',
        static: ['filesystem_policy'],
        author_uid: alice.uid,
        revision: 2,
      },
    });
    expect(await listed()).toMatch(/No such file or directory/);

    // With --restart: stored, and the sandbox starts again with it (the new path exists inside).
    const restarted = as(alice, ['policy', 'set', 'fs', wider, '--restart']);
    expect(restarted.stderr).toBe('');
    expect(restarted.stdout).toMatch(/^fs: policy revision 2 stored, and the sandbox restarted with it\n/);
    expect(restarted.stdout).toContain(`+ filesystem_policy.read_only: ${marker}`);
    expect(JSON.parse(as(alice, ['sandbox', 'get', 'fs', '-o', 'json']).stdout)).toMatchObject({
      state: 'running',
      policyRev: 2,
    });
    expect(await listed()).toBe('it\n');

    // A stopped sandbox takes a static change, and starts with it.
    expect(as(alice, ['sandbox', 'stop', 'fs', '--grace', '1']).status).toBe(0);
    const narrower = file('narrower.yaml', policy(['a.test']));
    const stored = as(alice, ['policy', 'set', 'fs', narrower]);
    expect(stored.stdout).toMatch(
      /^fs: policy revision 3 stored; the sandbox is not running and starts with it\n/,
    );
    expect(history(alice, 'fs').map((r) => [r.rev, r.effect])).toEqual([
      [1, 'start'],
      [2, 'restart'],
      [3, 'start'],
    ]);
    expect(as(alice, ['sandbox', 'start', 'fs']).status).toBe(0);
    expect(await listed()).toMatch(/No such file or directory/);
    expect(as(alice, ['sandbox', 'delete', 'fs']).status).toBe(0);
  });

  it('never loses one of two concurrent changes; a change based on a stale revision is refused', async () => {
    await create(alice, 'race', policy(['a.test']));
    const client = api(alice);
    const results = await Promise.all(
      ['c1.test', 'c2.test', 'c3.test', 'c4.test'].map((h) =>
        client.call<{ outcome: string }>('POST', '/v1/sandboxes/race/policy/operations', {
          operations: [{ op: 'add-endpoint', endpoint: `${h}:443` }],
        }),
      ),
    );
    expect(results.map((r) => r.outcome)).toEqual(['applied', 'applied', 'applied', 'applied']);
    const text = as(alice, ['policy', 'get', 'race']).stdout;
    for (const h of ['c1.test', 'c2.test', 'c3.test', 'c4.test']) expect(text).toContain(`host: ${h}`);
    expect(history(alice, 'race').map((r) => r.rev)).toEqual([1, 2, 3, 4, 5]);

    // A client that read revision 2 and sends a change based on it: refused, nothing stored.
    const stale = as(alice, [
      'policy',
      'set',
      'race',
      file('race.yaml', policy(['a.test'])),
      '--base-rev',
      '2',
    ]);
    expect(stale.status).toBe(2);
    expect(stale.stderr).toBe(
      'carapace: the policy of sandbox race is at revision 5, not 2 (what this change was based on): read it again (carapace policy get race) and retry\n',
    );
    const err = await client
      .call('PUT', '/v1/sandboxes/race/policy', { policy: policy(['a.test']), baseRev: 4 })
      .catch((e: GatewayError) => e);
    expect(err).toMatchObject({ code: 'VERSION_CONFLICT', status: 409 });
    expect(history(alice, 'race')).toHaveLength(5);
    const fresh = as(alice, [
      'policy',
      'set',
      'race',
      file('race.yaml', policy(['a.test'])),
      '--base-rev',
      '5',
    ]);
    expect(fresh.stdout).toMatch(/^race: policy revision 6, applied live/);
    expect(as(alice, ['sandbox', 'delete', 'race']).status).toBe(0);
  });

  it("a user reads and changes only their own sandboxes' policies; the author is the caller, never a claim", async () => {
    const view = await create(alice, 'mine', policy(['a.test']));
    const other = file('other.yaml', policy(['a.test', 'b.test']));
    for (const args of [
      ['policy', 'get', 'mine'],
      ['policy', 'history', 'mine'],
      ['policy', 'set', 'mine', other],
      ['policy', 'update', 'mine', '--add-endpoint', 'x.test:443'],
      ['policy', 'rollback', 'mine', '--to', '1'],
    ]) {
      const r = as(bob, args);
      expect(r.status, args.join(' ')).not.toBe(0);
      expect(r.stderr).toBe('carapace: no sandbox named "mine"\n');
    }
    expect(as(bob, ['policy', 'get', 'mine', '--owner', String(alice.uid)]).stderr).toMatch(
      /only root and members of carapace-admin/,
    );
    // A body that names an author: the revision's author is still the caller the socket says.
    const r = await api(bob)
      .call<unknown>('PUT', '/v1/sandboxes/mine/policy', { policy: policy(['b.test']) })
      .catch((e: GatewayError) => e);
    expect(r).toMatchObject({ code: 'SANDBOX_NOT_FOUND' });
    await api(alice).call('PUT', '/v1/sandboxes/mine/policy', {
      policy: policy(['a.test', 'b.test']),
      author: 0,
      authorUid: 0,
      // Nor does a body that claims the change approves a proposal: only approving one says so.
      source: 'approve',
      proposal: 1,
      origin: { source: 'approve', proposal: 1 },
    });
    // Root, an admin, acts on hers with --owner, as root.
    expect(as(null, ['policy', 'rollback', 'mine', '--to', '1', '--owner', String(alice.uid)]).status).toBe(
      0,
    );
    expect(history(alice, 'mine').map((x) => x.author)).toEqual([alice.uid, alice.uid, 0]);
    expect(history(alice, 'mine').map((x) => [x.source, x.proposal])).toEqual([
      ['create', null],
      ['set', null],
      ['rollback', null],
    ]);
    expect(history(null, 'mine', ['--owner', String(alice.uid)])).toHaveLength(3);

    // Bad input: one line (or the policy's own diagnostics), nothing stored, the sandbox untouched.
    const bad = file('bad.yaml', policy(['a.test']).replace('access: full', 'acess: full'));
    const invalid = as(alice, ['policy', 'set', 'mine', bad]);
    expect(invalid.status).toBe(2);
    expect(invalid.stderr).toMatch(
      new RegExp(`^${bad}:\\d+:\\d+: unknown key "acess" in endpoint \\(did you mean "access"\\?\\)\\n$`),
    );
    expect(as(alice, ['policy', 'update', 'mine', '--add-endpoint', 'a.test']).stderr).toBe(
      '--add-endpoint: expects host:port[:access[:protocol[:enforcement]]], got "a.test"\n',
    );
    expect(as(alice, ['policy', 'update', 'mine', '--add-preset', 'nosuch'])).toMatchObject({
      status: 2,
      stderr: 'carapace: unknown preset "nosuch" (carapace policy presets lists them)\n',
    });
    expect(as(alice, ['policy', 'rollback', 'mine', '--to', '9']).stderr).toBe(
      'carapace: sandbox mine has no policy revision 9: its revisions are 1 to 3 (carapace policy history mine)\n',
    );
    expect(history(alice, 'mine')).toHaveLength(3);
    expect(audit(view.id).filter((e) => e.class_uid === 5019 && e.activity_id === 99)).toHaveLength(1); // the invalid text
    expect(as(alice, ['sandbox', 'delete', 'mine']).status).toBe(0);
    // Some twenty CLI runs, one after another: minutes on a loaded machine (CI saw > 60 s).
  }, 300_000);
});
