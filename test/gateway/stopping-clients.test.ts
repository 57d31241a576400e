/**
 * What a client sees when the gateway stops under it (docs/gateway.md, "Sandboxes outlive the
 * gateway"): `gateway stop` says how many sandboxes run on; a `logs -f` and an `exec` end with one line that says the gateway went away and that
 * the sandbox runs on, not Node's "aborted" or the control protocol's words; the sandbox does run
 * on, and the next gateway serves both again.
 */
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { carapaceAsync } from '../helpers/cli.js';
import { cliAs, startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { holds } from '../helpers/premises.js';

describe.skipIf(!holds('root'))('clients of a gateway that stops', () => {
  const gateways: TestGateway[] = [];
  afterAll(async () => {
    for (const gw of gateways) await gw.stop();
  });

  it('logs -f and exec end saying so; the sandbox runs on', async () => {
    const gw = await startTestGateway();
    gateways.push(gw);
    const socket = join(gw.home, 'run', 'gateway.sock');
    const create = cliAs(gw.home, [
      'sandbox',
      'create',
      '--name',
      'ticker',
      '--',
      'sh',
      '-c',
      'while :; do echo tick; sleep 0.2; done',
    ]);
    expect(create.stderr).toBe('');
    const follow = carapaceAsync(['sandbox', 'logs', 'ticker', '-f'], { home: gw.home });
    await follow.waitForStdout('tick\n');
    const exec = carapaceAsync(['sandbox', 'exec', 'ticker', '--', 'sh', '-c', 'echo started; sleep 60'], {
      home: gw.home,
    });
    await exec.waitForStdout('started\n');

    // `gateway stop` says what runs on.
    const stop = cliAs(gw.home, ['gateway', 'stop']);
    expect(stop.stdout).toBe(
      `gateway ${gw.child.pid} stopped; 1 sandbox runs on (the next gateway re-adopts it; carapace sandbox stop NAME stops one)\n`,
    );
    expect(stop.status).toBe(0);
    await gw.stop();
    const followed = await follow.result;
    expect(followed.stderr).toBe(
      `carapace: the gateway at ${socket} went away (stopped or restarted); its sandboxes run on: run this again once it answers (carapace gateway status)\n`,
    );
    expect(followed.status).toBe(1);
    const executed = await exec.result;
    expect(executed.stderr).toBe(
      `carapace: the gateway at ${socket} went away (stopped or restarted) before the command ended: the command was hung up; sandbox ticker runs on\n`,
    );
    expect(executed.status).toBe(1);

    const next = await startTestGateway([], gw.home);
    gateways.push(next);
    expect(cliAs(gw.home, ['sandbox', 'list']).stdout).toMatch(/\nticker +running /);
    const again = cliAs(gw.home, ['sandbox', 'exec', 'ticker', '--', 'echo', 'back']);
    expect(again.stdout).toBe('back\n');
    expect(cliAs(gw.home, ['sandbox', 'delete', 'ticker']).status).toBe(0);
  });
});
