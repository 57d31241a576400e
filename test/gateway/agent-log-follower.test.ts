/**
 * `sandbox logs -f` across rotations (src/gateway/sandboxes/agent-log-follower.ts), on real files
 * and a real directory watch, written the way the init writes them (native/logs.c): lines appended
 * to the file it was handed, the next file only after it switched. Two rotations that come before
 * the follower looks (a fast writer, a busy gateway) must not make it skip the file in between,
 * whether that file is still there as `.1` (FILES 3) or its predecessor was dropped (FILES 2).
 */
import { closeSync, mkdtempSync, openSync, rmSync, writeSync, constants } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { AgentLogs } from '../../src/gateway/sandboxes/agent-log.js';
import { followAgentLog } from '../../src/gateway/sandboxes/agent-log-follower.js';

const APPEND = constants.O_WRONLY | constants.O_APPEND;
const line = (tag: string) => `${JSON.stringify({ t: 0, s: 'out', d: `${tag}\n` })}\n`;

let cleanup: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanup.reverse()) c();
  cleanup = [];
});

async function until(what: string, ready: () => boolean): Promise<void> {
  const end = Date.now() + 20_000;
  while (!ready()) {
    if (Date.now() > end) throw new Error(`still not so after 20 s: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('following the agent log across rotations', () => {
  for (const files of [2, 3]) {
    it(`reads every file in order when two rotations come at once (FILES ${files})`, async () => {
      const dir = mkdtempSync(join(tmpdir(), 'carapace-follow-'));
      const logs = new AgentLogs(dir, { maxFileBytes: 1024 * 1024, files });
      cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
      cleanup.push(() => logs.close());
      const id = 'sb-follow';
      const base = logs.base(id);
      let writing = openSync(logs.path(id), APPEND | constants.O_CREAT, 0o600);
      cleanup.push(() => closeSync(writing));
      writeSync(writing, line('a1'));
      // The follower starts where a reading ended: the current file, read to its end.
      const held = logs.dir.openForReading(base)!;
      const got: string[] = [];
      const stop = followAgentLog(logs, id, held, (text) => got.push((JSON.parse(text) as { d: string }).d));
      cleanup.push(stop);

      // In one turn (the follower cannot look in between): the init writes A, is handed B, writes
      // it past half, is handed C, writes C. Each switch is a rotation by the gateway.
      writeSync(writing, line('a2'));
      const b = logs.dir.rotate(base, logs.rotation, APPEND, false).fd;
      closeSync(writing);
      writing = b;
      writeSync(writing, line('b1'));
      writeSync(writing, line('b2'));
      const c = logs.dir.rotate(base, logs.rotation, APPEND, false).fd;
      closeSync(writing);
      writing = c;
      writeSync(writing, line('c1'));

      await until('the last line followed', () => got.includes('c1\n'));
      writeSync(writing, line('c2'));
      await until('a line after', () => got.includes('c2\n'));
      expect(got).toEqual(['a2\n', 'b1\n', 'b2\n', 'c1\n', 'c2\n']);
    });
  }
});
