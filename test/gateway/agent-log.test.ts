/**
 * The gateway's side of the agent log's rotation (src/gateway/sandboxes/agent-log.ts) against a
 * real init (the native harness's sandbox with --log-fd and --log-limit): a request answered by a
 * rotation, symlinks planted where `.1` and the new file go renamed over or removed and never
 * written through, the same request answered twice rotating once, and a re-adoption's settling.
 */
import {
  existsSync,
  lstatSync,
  readFileSync,
  readdirSync,
  statSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { AgentLogs } from '../../src/gateway/sandboxes/agent-log.js';
import type { ControlLogEvent } from '../../src/sandbox/control/control.js';
import { startControlled, type ControlledSandbox } from '../native/control-harness.js';
import { USUAL_PATHS, python } from '../native/harness.js';

const MiB = 1024 * 1024;

let running: ControlledSandbox | undefined;
let logs: AgentLogs | undefined;
afterEach(async () => {
  if (running && running.sandbox.child.exitCode === null) {
    running.sandbox.child.kill('SIGKILL');
    await running.sandbox.result.catch(() => undefined);
  }
  logs?.close();
  running = undefined;
  logs = undefined;
});

/** 600 lines of 1,001 bytes (past half of 1 MiB) at once, then one line per /tmp/goN. */
const AGENT = python(
  [
    'import os, time',
    'for i in range(600): os.write(1, b"x" * 1000 + b"\\n")',
    'n = 1',
    'while True:',
    '    while not os.path.exists(f"/tmp/go{n}"): time.sleep(0.02)',
    '    os.write(1, f"after {n}\\n".encode()); n += 1',
  ].join('\n'),
);

async function until(ready: () => boolean): Promise<void> {
  while (!ready()) await new Promise((r) => setTimeout(r, 20));
}

describe('agent log files (agent-log.ts) with a real init', () => {
  it('answers a request by rotating, never through a planted symlink; the same request again rotates nothing; a re-adoption settles the log', async () => {
    running = await startControlled({
      init: [...USUAL_PATHS, '--log-limit', String(MiB)],
      log: true,
      command: AGENT,
    });
    const c = running;
    const file = c.logFile!;
    const id = basename(file, '.log');
    logs = new AgentLogs(dirname(file), { maxFileBytes: MiB, files: 2 });
    const events = c.control.events();
    let asked: ControlLogEvent | undefined;
    for await (const e of events) {
      if (e.event === 'log') {
        asked = e;
        break;
      }
    }
    expect(asked).toMatchObject({ file: logs.identity(`${id}.log`) });

    // Symlinks where `.1` and the new file go, to a file that must stay as it is.
    const bait = join(dirname(file), `${id}-bait`);
    writeFileSync(bait, 'untouched\n');
    symlinkSync(bait, `${file}.1`);
    symlinkSync(bait, `${file}.new`);
    const full = logs.identity(`${id}.log`);
    expect(await logs.answer(id, c.control, asked!)).toBe(true);
    expect(readFileSync(bait, 'utf8')).toBe('untouched\n');
    expect(lstatSync(`${file}.1`).isFile()).toBe(true);
    expect(logs.identity(`${id}.log.1`)).toBe(full);
    expect(existsSync(`${file}.new`)).toBe(false);
    expect(lstatSync(file).isFile()).toBe(true);
    const fresh = logs.identity(`${id}.log`);

    // The same request again (a gateway that died before acknowledging it): no second rotation.
    expect(await logs.answer(id, c.control, asked!)).toBe(false);
    expect(logs.identity(`${id}.log.1`)).toBe(full);
    expect(logs.identity(`${id}.log`)).toBe(fresh);

    // A re-adoption with the current file below half: handed over again, nothing rotated.
    expect(await logs.resume(id, c.control)).toBe(false);
    expect(logs.identity(`${id}.log`)).toBe(fresh);
    await c.control.exec({ argv: ['touch', '/tmp/go1'] }).exited;
    await until(() => readFileSync(file, 'utf8').includes('after 1'));
    expect(readFileSync(`${file}.1`, 'utf8')).not.toContain('after 1');

    // Past half (here: made so by hand): a re-adoption rotates.
    writeFileSync(file, 'x'.repeat(MiB / 2) + '\n', { flag: 'a' });
    expect(await logs.resume(id, c.control)).toBe(true);
    expect(statSync(file).size).toBe(0);
    await c.control.exec({ argv: ['touch', '/tmp/go2'] }).exited;
    await until(() => readFileSync(file, 'utf8').includes('after 2'));

    // Removing takes every generation, and only this sandbox's.
    await logs.remove(id);
    expect(readdirSync(dirname(file)).filter((n) => n.startsWith(`${id}.log`))).toEqual([]);
    expect(readFileSync(bait, 'utf8')).toBe('untouched\n'); // never written through
    unlinkSync(bait);
    events.close();
  });
});
