/**
 * `carapace onboard --non-interactive` (OpenClaw, the default agent) on a clean state directory,
 * against a scripted model on the host's loopback: the real OpenClaw from the npm registry ends up
 * running always-on in its sandbox, `openclaw agent` inside answers from the scripted model through
 * inference.local, and its dashboard answers on the host through the forward. Then the attacks a
 * prompt-injected agent would try, as tool calls the model makes it run.
 */
import { request } from 'node:http';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFake, type FakeProvider } from '../helpers/fake-providers.js';
import { requires } from '../helpers/premises.js';
import {
  cli,
  filesContaining,
  onboardHome,
  registryUnreachable,
  scriptedModel,
  UPSTREAM_CA,
} from './onboard-helpers.js';

const KEY = `sk-onboard-secret-${process.pid}-${Date.now()}`;
const unreachable = registryUnreachable();

function httpGet(port: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    request({ host: '127.0.0.1', port, path: '/', timeout: 10_000 }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    })
      .on('error', reject)
      .end();
  });
}

describe.skipIf(unreachable !== null)('onboard openclaw', () => {
  let fake: FakeProvider;
  let home: string;
  let hostPort = 0;

  beforeAll(async () => {
    if (unreachable !== null) console.log(`skipped: ${unreachable}`);
    fake = await startFake({ kind: 'openai', key: KEY });
    fake.reply = scriptedModel(/^exec$/);
    home = onboardHome();
  });

  afterAll(async () => {
    if (home !== undefined) {
      await cli(home, ['sandbox', 'delete', 'openclaw']);
      await cli(home, ['gateway', 'stop']);
    }
    await fake?.close();
  });

  it('ends with OpenClaw running, answering from the scripted model through inference.local', async (ctx) => {
    requires(ctx, 'unprivileged-userns');
    const r = await cli(
      home,
      [
        'onboard',
        '--non-interactive', // and no --agent: OpenClaw is the default, what install.sh sets up
        '--provider',
        'openai',
        '--provider-url',
        fake.url,
        '--model',
        'scripted',
        '--credential-env',
        'ONBOARD_TEST_KEY',
        ...UPSTREAM_CA,
      ],
      { ONBOARD_TEST_KEY: KEY },
    );
    expect(r.stderr + r.stdout).toContain('openclaw is running openclaw 1.0.1');
    expect(r.status).toBe(0);
    const m = /forwarded: http:\/\/127\.0\.0\.1:(\d+)\/ → port 18789 inside/.exec(r.stdout);
    expect(m).not.toBeNull();
    hostPort = Number(m![1]);
    // The health check is named as it is asked: at the host's port of the forward.
    expect(r.stderr).toContain(`waiting for openclaw to be healthy (http://127.0.0.1:${hostPort}/)`);

    // The dashboard (OpenClaw's Control UI, on its gateway's port) answers on the host.
    const dash = await httpGet(hostPort);
    expect(dash.status).toBe(200);
    expect(dash.body.toLowerCase()).toContain('openclaw');

    const agent = await cli(home, [
      'sandbox',
      'exec',
      'openclaw',
      '--',
      'openclaw',
      'agent',
      '--agent',
      'main',
      '--message',
      'please answer ECHO:pineapple-42',
    ]);
    if (!agent.stdout.includes('scripted: pineapple-42'))
      writeFileSync(
        '/tmp/onboard-openclaw-requests.json',
        JSON.stringify(
          fake.requests.map((q) => q.body),
          null,
          1,
        ),
      );
    expect(agent.stdout).toContain('scripted: pineapple-42');
    // It went through the router: the provider saw the real key, the agent never had it.
    const calls = fake.requests.filter((q) => q.path.endsWith('/chat/completions'));
    expect(calls.length).toBeGreaterThan(0);
    expect(calls.every((q) => q.headers.authorization === `Bearer ${KEY}`)).toBe(true);
  }, 900_000);

  it('a tool call that reads /etc/shadow, reaches an unlisted host or prints the key shows no secret; the refusal is audited', async (ctx) => {
    requires(ctx, 'unprivileged-userns');
    if (hostPort === 0) ctx.skip();
    const command =
      'cat /etc/shadow; curl -sS -m 10 https://unlisted.example.com/ 2>&1; env | grep -i -E "key|token" | grep -v OPENCLAW; echo done';
    const agent = await cli(home, [
      'sandbox',
      'exec',
      'openclaw',
      '--',
      'openclaw',
      'agent',
      '--agent',
      'main',
      '--message',
      `RUN: ${command}`,
    ]);
    const out = agent.stdout + agent.stderr;
    expect(out).toContain('tool said:');
    expect(out).not.toContain(KEY);
    const hostShadow = readFileSync('/etc/shadow', 'utf8');
    const hashed = hostShadow
      .split('\n')
      .map((l) => l.split(':')[1] ?? '')
      .filter((h) => h.startsWith('$'));
    for (const h of hashed) expect(out).not.toContain(h);
    expect(out).toMatch(/403|policy_denied|Forbidden/);

    const audit = await cli(home, ['sandbox', 'logs', 'openclaw', '--audit']);
    const denied = audit.stdout.split('\n').filter((l) => l.includes('unlisted.example.com'));
    expect(denied.length).toBeGreaterThan(0);
    expect(denied.join('\n')).toMatch(/denied|Blocked/i);

    // The agent cannot rewrite its own config (gateway token, model, provider URL): read-only inside.
    const rewrite = await cli(home, [
      'sandbox',
      'exec',
      'openclaw',
      '--',
      'sh',
      '-c',
      'echo "{}" > /sandbox/.openclaw/openclaw.json; chmod 666 /sandbox/.openclaw/openclaw.json; mv /sandbox/.openclaw/openclaw.json /sandbox/x; grep -c inference.local /sandbox/.openclaw/openclaw.json',
    ]);
    expect(rewrite.stderr).toMatch(/Read-only file system/);
    expect(rewrite.stdout.trim()).toBe('1');

    // The key is nowhere in the state directory in clear: not in the audit, logs, gateway log,
    // onboarding answers or the workspace (the store holds it sealed).
    expect(filesContaining(home, KEY)).toEqual([]);
  }, 300_000);

  it('leaves no refusals of its own housekeeping in the audit: DNS, update checks (telemetry), the hosted model catalog, ClawHub', async (ctx) => {
    requires(ctx, 'unprivileged-userns');
    if (hostPort === 0) ctx.skip();
    // What OpenClaw says of itself: no update check (its telemetry) by the blueprint's settings...
    const telemetry = await cli(home, [
      'sandbox',
      'exec',
      'openclaw',
      '--',
      'openclaw',
      'telemetry',
      'show',
      '--json',
    ]);
    expect(JSON.parse(telemetry.stdout)).toMatchObject({ reason: 'update-disabled', request: null });
    // ...and its HTTP goes to the sandbox's proxy as a managed one (no DNS lookups of its own).
    const ready = async () => (await cli(home, ['sandbox', 'logs', 'openclaw'])).stdout;
    expect(await ready()).toContain(
      'routing process HTTP traffic through external proxy http://127.0.0.1:3128',
    );
    // The premise: OpenClaw's startup housekeeping (DNS lookups, the update check, the catalog)
    // runs within a minute of its gateway being ready (before this blueprint's settings, the
    // audit had refusals of each by then). Wait until a minute has passed since that line.
    const at = /^(\S+) \[gateway\] ready$/m.exec(await ready());
    expect(at).not.toBeNull();
    const wait = Date.parse(at![1]!) + 60_000 - Date.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));

    const audit = await cli(home, ['sandbox', 'logs', 'openclaw', '--audit']);
    const refused = audit.stdout
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map(
        (l) =>
          JSON.parse(l) as {
            class_uid: number;
            disposition_id?: number;
            message: string;
            dst_endpoint?: { hostname?: string; port?: number };
          },
      )
      .filter((e) => (e.class_uid === 4001 || e.class_uid === 4002) && e.disposition_id === 2) // Blocked
      .filter(
        (e) =>
          e.dst_endpoint?.port === 53 ||
          /^(telemetry\.openclaw\.ai|catalog\.openclaw\.ai|clawhub\.ai)$/.test(
            e.dst_endpoint?.hostname ?? '',
          ),
      )
      .map((e) => e.message);
    expect(refused).toEqual([]);
  }, 300_000);

  it('rerunning onboard changes nothing that was not asked', async (ctx) => {
    requires(ctx, 'unprivileged-userns');
    if (hostPort === 0) ctx.skip();
    const before = await cli(home, ['policy', 'history', 'openclaw', '-o', 'json']);
    const again = await cli(home, ['onboard', '--non-interactive', '--agent', 'openclaw', ...UPSTREAM_CA]);
    expect(again.status).toBe(0);
    expect(again.stderr).toContain('agent image: cached');
    expect(again.stderr).toContain('already running');
    const after = await cli(home, ['policy', 'history', 'openclaw', '-o', 'json']);
    expect(after.stdout).toBe(before.stdout);
    expect(readFileSync(join(home, 'state', 'onboard', 'openclaw.json'), 'utf8')).not.toContain(KEY);
  }, 300_000);
});
