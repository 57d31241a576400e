/**
 * The apply unit on its own (src/runtime/policy-apply.ts), against a real egress proxy with a
 * sandbox attached and real loopback upstreams: what a change does to the requests the proxy lets
 * through, what it refuses, and the one 5019 event each outcome leaves. Its two users are tested
 * through real sandboxes: test/network/reload.test.ts (carapace run) and test/gateway/policy.test.ts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LivePolicy, PolicyApplyError } from '../../src/runtime/policy-apply.js';
import {
  compile,
  eventsOf,
  parsed,
  startRig,
  statusOf,
  startUpstreams,
  type Rig,
  type Upstreams,
} from '../proxy/harness.js';

let up: Upstreams;
let rig: Rig;

const STATIC = `version: 1
filesystem_policy: { read_only: [/usr, /etc], read_write: [/sandbox, /tmp] }
landlock: { compatibility: best_effort }
process: { run_as_user: sandbox, run_as_group: sandbox }
limits: { memory: 256Mi }
listen_ports: [8080]
`;
const network = (hosts: string[]) =>
  hosts.length === 0
    ? STATIC
    : `${STATIC}network_policies:
  web:
    endpoints:
${hosts.map((h) => `      - { host: ${h}, port: ${up.httpPort}, protocol: rest, access: full }`).join('\n')}
`;

const status = (host: string) => statusOf(rig.socketPath, host, up.httpPort);

beforeAll(async () => {
  up = await startUpstreams();
  rig = await startRig({ up, policy: network(['api.example.test']) });
});
afterAll(async () => {
  await rig.close();
  await up.close();
});

const live = (text: string, revision = 1) =>
  new LivePolicy({ sandbox: 'sb1', current: parsed(text), revision, audit: rig.audit, target: rig.sb });

describe('applying a policy change to a running sandbox', () => {
  it('applies a network change at once, and audits it with who made it and which revision', async () => {
    const before = network(['api.example.test']);
    rig.sb.setGeneration(compile(before)); // each case starts from a known policy
    const policy = live(before);
    expect(await status('other.example.test')).toBe(403);
    const gen = rig.sb.generation;
    const events = eventsOf(rig.audit, 5019).length;

    const r = policy.apply(network(['api.example.test', 'other.example.test']), 'rev2.yaml', {
      source: 'api',
      author: 1000,
      action: 'set',
      revision: 2,
    });
    expect(r).toMatchObject({ outcome: 'applied', generation: gen + 1, closedTunnels: 0 });
    expect(r.outcome === 'applied' && r.sections.dynamic).toEqual(['network_policies']);
    expect(await status('other.example.test')).toBe(200);
    expect(policy.revision).toBe(2);

    const added = eventsOf(rig.audit, 5019).slice(events);
    expect(added).toHaveLength(1);
    expect(added[0]!.activity_id).toBe(1);
    expect(added[0]!.message).toBe(
      `policy revision 2 (set) by uid 1000: network policy generation ${gen + 1} in force`,
    );
    expect(added[0]!.unmapped).toMatchObject({
      source: 'api',
      author_uid: 1000,
      action: 'set',
      revision: 2,
      previous_revision: 1,
      closed_tunnels: 0,
      sections: { static: [], dynamic: ['network_policies'] },
    });

    // Back again: a rollback's provenance names the revision it restores.
    const back = policy.apply(before, 'rev3.yaml', {
      source: 'api',
      author: 0,
      action: 'rollback',
      revision: 3,
      restores: 1,
    });
    expect(back.outcome).toBe('applied');
    expect(await status('other.example.test')).toBe(403);
    const last = eventsOf(rig.audit, 5019).at(-1)!;
    expect(last.message).toMatch(/^policy revision 3 \(rollback to 1\) by uid 0: /);
    expect(last.unmapped).toMatchObject({ restores: 1, previous_revision: 2, revision: 3 });

    // An approved proposal's: the event names the proposal, the revision's source.
    policy.apply(network(['api.example.test', 'other.example.test']), 'rev4.yaml', {
      source: 'api',
      author: 0,
      action: 'update',
      origin: 'approve',
      proposal: 12,
      revision: 4,
    });
    const approval = eventsOf(rig.audit, 5019).at(-1)!;
    expect(approval.message).toMatch(/^policy revision 4 \(approve of proposal 12\) by uid 0: /);
    expect(approval.unmapped).toMatchObject({
      action: 'update',
      origin: 'approve',
      proposal_id: 12,
      revision: 4,
    });
  });

  it('refuses a change to any static section, or to version, on a running sandbox; nothing changes', async () => {
    const text = network(['api.example.test']);
    rig.sb.setGeneration(compile(text));
    const policy = live(text);
    const changed: [string, string][] = [
      [
        'filesystem_policy',
        text.replace('read_write: [/sandbox, /tmp]', 'read_write: [/sandbox, /tmp, /var/tmp]'),
      ],
      ['landlock', text.replace('best_effort', 'hard_requirement')],
      ['process', text.replace('run_as_user: sandbox', 'run_as_user: agent')],
      ['limits', text.replace('256Mi', '512Mi')],
      ['listen_ports', text.replace('[8080]', '[8080, 9090]')],
    ];
    for (const [section, next] of changed) {
      const gen = rig.sb.generation;
      const events = eventsOf(rig.audit, 5019).length;
      // Together with a network change: the whole change is refused, not the static part alone.
      const r = policy.apply(next.replace('api.example.test', 'other.example.test'), 'next.yaml', {
        source: 'api',
        author: 1000,
        revision: 2,
      });
      expect(r.outcome, section).toBe('needs-restart');
      expect(r.outcome === 'needs-restart' && r.static).toEqual([section]);
      expect(r.outcome === 'needs-restart' && r.message).toBe(
        `${section} cannot change while the sandbox runs`,
      );
      expect(rig.sb.generation).toBe(gen);
      expect(policy.current).toEqual(parsed(text));
      expect(policy.revision).toBe(1);
      const added = eventsOf(rig.audit, 5019).slice(events);
      expect(added).toHaveLength(1);
      expect(added[0]!.activity_id).toBe(99);
      expect(added[0]!.unmapped).toMatchObject({
        reason: 'static section changed',
        static: [section],
        author_uid: 1000,
      });
    }
    expect(await status('api.example.test')).toBe(200);
    expect(await status('other.example.test')).toBe(403);
  });

  it('refuses a text that does not parse, with its position; the policy in force stays', async () => {
    const text = network(['api.example.test']);
    rig.sb.setGeneration(compile(text));
    const policy = live(text);
    const gen = rig.sb.generation;
    const r = policy.apply(text.replace('access: full', 'acess: full'), 'bad.yaml', {
      source: 'file',
      file: 'bad.yaml',
    });
    expect(r.outcome).toBe('refused');
    expect(r.outcome === 'refused' && r.message).toMatch(/^bad\.yaml:\d+:\d+: unknown key "acess"/);
    expect(rig.sb.generation).toBe(gen);
    expect(eventsOf(rig.audit, 5019).at(-1)).toMatchObject({
      activity_id: 99,
      unmapped: { reason: 'invalid policy', source: 'file', file: 'bad.yaml' },
    });
    expect(await status('api.example.test')).toBe(200);
  });

  it('applies an inference change live, and a change of comments alone without a swap', () => {
    const text = network(['api.example.test']);
    const policy = live(text);
    const gen = rig.sb.generation;
    const inference = `${text}inference:
  routes:
    local: { provider: ollama, endpoint: 'http://127.0.0.1:11434/v1', model: llama3, local: true }
  default: local
`;
    const r = policy.apply(inference, 'inference.yaml', { source: 'api', revision: 2 });
    expect(r).toMatchObject({ outcome: 'applied', generation: gen + 1 });
    expect(r.outcome === 'applied' && r.sections.dynamic).toEqual(['inference']);

    const comment = policy.apply(`# reviewed\n${inference}`, 'comment.yaml', { source: 'api', revision: 3 });
    expect(comment).toMatchObject({ outcome: 'applied', generation: null });
    expect(rig.sb.generation).toBe(gen + 1);
    expect(eventsOf(rig.audit, 5019).at(-1)).toMatchObject({
      activity_id: 1,
      message: 'policy change applied (policy revision 3): no network or inference change',
    });
  });

  it('takes any valid change for a sandbox that does not run (it starts with it)', () => {
    const text = network(['api.example.test']);
    const policy = new LivePolicy({
      sandbox: 'stopped',
      current: parsed(text),
      audit: rig.audit,
      target: null,
    });
    const r = policy.apply(text.replace('256Mi', '1Gi'), 'next.yaml', {
      source: 'api',
      author: 1000,
      revision: 2,
    });
    expect(r).toMatchObject({ outcome: 'applied', generation: null });
    expect(r.outcome === 'applied' && r.sections.static).toEqual(['limits']);
    expect(eventsOf(rig.audit, 5019).at(-1)).toMatchObject({
      activity_id: 1,
      message: 'policy change stored (policy revision 2 by uid 1000): in force when the sandbox starts',
      unmapped: { sandbox: 'stopped' },
    });
  });

  it('refuses to commit a plan made before another change was committed', () => {
    const text = network(['api.example.test']);
    const policy = live(text);
    const first = policy.plan(network(['other.example.test']), 'a.yaml');
    const second = policy.plan(network(['api.example.test', 'other.example.test']), 'b.yaml');
    policy.commit(first, { source: 'api' });
    expect(() => policy.commit(second, { source: 'api' })).toThrow(PolicyApplyError);
  });
});
