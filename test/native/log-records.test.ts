/**
 * How many records the init's log gets for what the agent writes (native/logs.c): what arrives
 * within a short window is one record, so that an agent writing a byte at a time does not make
 * a record (some 40 bytes of framing) per byte. Nothing is lost or reordered for it: a partial
 * line arrives without the agent writing more or exiting, and what is pending when the pipes
 * close is written. Run against the release build and the ASan + UBSan build (vitest.config.ts).
 */
import { statSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { startControlled, type ControlledSandbox, type LogLine } from './control-harness.js';
import { USUAL_PATHS, python } from './harness.js';

let running: ControlledSandbox | undefined;
afterEach(async () => {
  if (running && running.sandbox.child.exitCode === null) {
    running.sandbox.child.kill('SIGKILL');
    await running.sandbox.result.catch(() => undefined);
  }
  running = undefined;
});

/** 1,000 bytes: printable ASCII, newlines, and two-byte characters (é) cut by single-byte writes. */
const PAYLOAD = ((): Buffer => {
  const parts: Buffer[] = [];
  let size = 0;
  for (let i = 0; size < 1000; i++) {
    const piece =
      i % 40 === 39 ? '\n' : i % 20 === 3 && size < 998 ? 'é' : String.fromCharCode(33 + ((i * 7) % 90));
    parts.push(Buffer.from(piece, 'utf8'));
    size += Buffer.byteLength(piece);
  }
  return Buffer.concat(parts);
})();

/** The agent's bytes in `lines`, in order, for one stream. */
function bytesOf(lines: LogLine[], stream: 'out' | 'err'): Buffer {
  return Buffer.concat(
    lines
      .filter((l) => l.s === stream)
      .map((l) => (l.b !== undefined ? Buffer.from(l.b, 'base64') : Buffer.from(l.d ?? '', 'utf8'))),
  );
}

async function until(ready: () => boolean | Promise<boolean>): Promise<void> {
  while (!(await ready())) await new Promise((r) => setTimeout(r, 20));
}

describe('log records', () => {
  it('an agent writing 1,000 single bytes gets far fewer records, byte-exact, without writing more or exiting', async () => {
    expect(PAYLOAD.length).toBe(1000);
    running = await startControlled({
      init: USUAL_PATHS,
      log: true,
      command: python(
        [
          'import os, sys, time',
          `data = bytes.fromhex("${PAYLOAD.toString('hex')}")`,
          'for b in data: sys.stdout.buffer.write(bytes([b])); sys.stdout.flush(); time.sleep(0.0002)',
          'while not os.path.exists("/tmp/go"): time.sleep(0.02)',
          'sys.stdout.buffer.write(b"tail without a newline"); sys.stdout.flush()',
          'sys.stderr.buffer.write(b"e"); sys.stderr.flush()',
        ].join('\n'),
      ),
    });
    const c = running;
    // All of it arrives while the agent waits: nothing waits for more output or for the exit.
    await until(() => bytesOf(c.logLines(), 'out').length >= PAYLOAD.length);
    const lines = c.logLines().filter((l) => l.s === 'out');
    expect(bytesOf(lines, 'out').equals(PAYLOAD)).toBe(true);
    expect(lines.every((l) => l.d !== undefined)).toBe(true); // a cut é is never base64
    console.log(
      `records for 1,000 single-byte writes: ${lines.length}, file ${statSync(c.logFile!).size} bytes`,
    );
    expect(lines.length).toBeLessThan(200);

    // What is pending when the pipes close is written, whatever the window.
    expect(await c.control.exec({ argv: ['touch', '/tmp/go'] }).exited).toBe(0);
    expect((await c.sandbox.result).code).toBe(0);
    const all = c.logLines();
    expect(bytesOf(all, 'out').equals(Buffer.concat([PAYLOAD, Buffer.from('tail without a newline')]))).toBe(
      true,
    );
    expect(bytesOf(all, 'err').toString()).toBe('e');
  });
});
