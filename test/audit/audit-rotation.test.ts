/**
 * Rotation of the gateway's audit files (src/audit/audit-files.ts, src/gateway/audit-router.ts):
 * real files in a real directory, through the router the gateway writes with. A sandbox that
 * floods refusals keeps to `maxFileBytes × files`; the history reads across the generations; a
 * rotation in the middle of a turn's batch loses and tears no line; a symlink planted where a
 * generation goes is never followed. The end-to-end flood through a gateway and `sandbox logs` is
 * test/gateway/audit-rotation.test.ts.
 */
import { spawnSync } from 'node:child_process';
import {
  closeSync,
  lstatSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { AuditDirectory, networkActivity, RotatingAuditFile, type OcsfEvent } from '../../src/audit/index.js';
import { AuditRouter, type AuditHistoryFile } from '../../src/gateway/audit-router.js';
import { REPO } from '../helpers/cli.js';

const KiB = 1024;
const routers: AuditRouter[] = [];
const temps: string[] = [];
afterEach(async () => {
  for (const r of routers.splice(0)) {
    await r.dropsCounted();
    r.close();
  }
  for (const t of temps.splice(0)) rmSync(t, { recursive: true, force: true });
});

/** A temporary directory, removed after the test. */
function temp(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  temps.push(dir);
  return dir;
}

function router(maxFileBytes: number, files: number): { dir: string; audit: AuditRouter } {
  const dir = join(temp('carapace-audit-rot-'), 'audit');
  const audit = new AuditRouter(dir, { rotation: { maxFileBytes, files } });
  routers.push(audit);
  return { dir, audit };
}

/** The n-th refusal of a flooding sandbox (its host names it: d<n>.test). */
const refusal = (n: number): OcsfEvent =>
  networkActivity({
    sandbox: 'ignored',
    disposition: 'blocked',
    host: `d${n}.test`,
    port: 443,
    reason: 'no policy',
  });

interface Line {
  class_uid: number;
  dst_endpoint?: { hostname: string };
  finding_info?: { uid: string };
  unmapped: { lines?: number; bytes?: number; file?: string };
}

/** The lines of the sandbox's history as the router hands it to readers, oldest first. */
function readHistory(files: AuditHistoryFile[]): Line[] {
  const out: Line[] = [];
  for (const f of files) {
    const buf = Buffer.alloc(f.size);
    let done = 0;
    while (done < f.size) done += readSync(f.fd, buf, done, f.size - done, done);
    closeSync(f.fd);
    const text = buf.toString('utf8');
    expect(text.endsWith('\n') || text === '').toBe(true); // never a torn last line
    for (const l of text.split('\n').filter(Boolean)) out.push(JSON.parse(l) as Line);
  }
  return out;
}

const hostNumber = (l: Line) => Number(/^d(\d+)\.test$/.exec(l.dst_endpoint?.hostname ?? '')?.[1] ?? NaN);

describe('audit rotation', () => {
  it('a sandbox flooding refusals keeps to the limit × files, and the dropped lines are audited', async () => {
    const { dir, audit } = router(64 * KiB, 3);
    const sink = audit.forSandbox('sb-flood');
    const drops: Line[] = []; // every drop event, those in generations dropped since too
    audit.subscribe((_id, e) => {
      if (e.class_uid === 2004) drops.push(e as unknown as Line);
    });
    const total = 5_000; // ~1.5 MiB of refusals: 8 times what may be kept
    for (let n = 1; n <= total; n++) sink.emit(refusal(n));
    await audit.dropsCounted();
    audit.flush();

    const names = readdirSync(dir).sort();
    expect(names).toEqual(['sb-flood.jsonl', 'sb-flood.jsonl.1', 'sb-flood.jsonl.2']);
    for (const name of names) expect(lstatSync(join(dir, name)).size).toBeLessThanOrEqual(64 * KiB);

    // What is kept is the most recent stretch, unbroken and in order, ending at the last refusal.
    const lines = readHistory(audit.history('sb-flood'));
    const refusals = lines.filter((l) => l.class_uid === 4001).map(hostNumber);
    expect(refusals.at(-1)).toBe(total);
    expect(refusals).toEqual(refusals.map((_, i) => refusals[0]! + i));

    // Every line written (the refusals and the drop events) is either still there or counted in
    // a drop event: none both, none neither.
    expect(drops.length).toBeGreaterThan(0);
    expect(drops.every((d) => d.finding_info?.uid === 'audit-dropped')).toBe(true);
    const dropped = drops.reduce((sum, d) => sum + d.unmapped.lines!, 0);
    expect(lines.length + dropped).toBe(total + drops.length);
    expect(drops[0]!.unmapped).toMatchObject({ file: 'sb-flood.jsonl.2' });
    expect(drops[0]!.unmapped.bytes).toBeGreaterThan(60 * KiB);
    // The trail says so itself: the latest drop is in the history a reader gets.
    expect(lines.filter((l) => l.finding_info?.uid === 'audit-dropped').length).toBeGreaterThan(0);
  });

  it('a process killed while it counts a dropped generation leaves it to the next, which says the drop', async () => {
    const dir = join(temp('carapace-audit-kill-'), 'audit');
    // A gateway's router in a process of its own, killed (SIGKILL) in the turn of a rotation that
    // drops a generation: its count has not begun.
    const child = spawnSync(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `
        import { AuditRouter } from ${JSON.stringify(join(REPO, 'dist/src/gateway/audit-router.js'))};
        import { networkActivity } from ${JSON.stringify(join(REPO, 'dist/src/audit/index.js'))};
        import { readdirSync } from 'node:fs';
        const audit = new AuditRouter(${JSON.stringify(dir)}, { rotation: { maxFileBytes: ${64 * KiB}, files: 2 } });
        const sink = audit.forSandbox('sb-killed');
        let rotations = 0;
        for (let n = 1; n < 20000; n++) {
          const before = readdirSync(${JSON.stringify(dir)}).join();
          sink.emit(networkActivity({ sandbox: 'x', disposition: 'blocked', host: 'd' + n + '.test', port: 443, reason: 'no policy' }));
          // The first change is the file made, the second a rotation, the third one that drops.
          if (readdirSync(${JSON.stringify(dir)}).join() !== before && ++rotations === 3) {
            process.stdout.write(String(n));
            process.kill(process.pid, 'SIGKILL');
          }
        }
        `,
      ],
      { encoding: 'utf8' },
    );
    expect(child.signal).toBe('SIGKILL');
    const total = Number(child.stdout);
    expect(total).toBeGreaterThan(100);

    const audit = new AuditRouter(dir, { rotation: { maxFileBytes: 64 * KiB, files: 2 } });
    routers.push(audit);
    const drops: Line[] = [];
    audit.subscribe((_id, e) => {
      if (e.class_uid === 2004) drops.push(e as unknown as Line);
    });
    audit.forSandbox('sb-killed').emit(refusal(total + 1));
    await audit.dropsCounted();
    expect(drops).toHaveLength(1);
    expect(drops[0]!.unmapped).toMatchObject({ file: 'sb-killed.jsonl.1' });
    // Every line the killed process wrote is still there or counted in the drop, none both.
    const kept = readHistory(audit.history('sb-killed')).filter((l) => l.class_uid === 4001);
    expect(kept.length - 1 + drops[0]!.unmapped.lines!).toBe(total);
    expect(readdirSync(dir).sort()).toEqual(['sb-killed.jsonl', 'sb-killed.jsonl.1']);
  });

  it('reads the history across a rotation: the lines before it and after it, once each', async () => {
    const { audit } = router(64 * KiB, 4);
    const sink = audit.forSandbox('sb-read');
    let n = 0;
    while (readdirSync(join(audit.pathOf('sb-read'), '..')).length < 2) sink.emit(refusal(++n));
    const rotatedAt = n; // the line that started a new file
    for (let i = 0; i < 10; i++) sink.emit(refusal(++n));
    const files = audit.history('sb-read');
    expect(files.length).toBe(2);
    const nums = readHistory(files).map(hostNumber);
    expect(nums).toEqual(Array.from({ length: n }, (_, i) => i + 1));
    expect(nums.slice(rotatedAt - 5, rotatedAt + 5)).toEqual(
      Array.from({ length: 10 }, (_, i) => rotatedAt - 4 + i),
    );
  });

  it('a rotation under concurrent appends (emitAhead batches, plain emits between) loses and tears no line', async () => {
    const { dir, audit } = router(64 * KiB, 1000); // nothing dropped: every line must be found
    const sink = audit.forSandbox('sb-race');
    let n = 0;
    const written: Promise<void>[] = [];
    // 40 turns, each with 150 requests' lines queued together and a plain emit in their middle:
    // every turn's batch is one write that crosses the limit now and then.
    for (let turn = 0; turn < 40; turn++) {
      for (let i = 0; i < 150; i++) {
        written.push(sink.emitAhead!(refusal(++n)));
        if (i === 75) sink.emit(refusal(++n));
      }
      await new Promise((r) => setImmediate(r));
    }
    await Promise.all(written);
    const names = readdirSync(dir);
    expect(names.length).toBeGreaterThan(10); // it did rotate, many times, inside batches
    for (const name of names) expect(lstatSync(join(dir, name)).size).toBeLessThanOrEqual(64 * KiB);
    const nums = readHistory(audit.history('sb-race')).map(hostNumber);
    expect(nums.length).toBe(n);
    expect(new Set(nums).size).toBe(n);
    // The file keeps the order of emission: a plain emit writes what was queued before it.
    expect(nums).toEqual(Array.from({ length: n }, (_, i) => i + 1));
  });

  it('never follows a symlink planted where a generation, or the next file, goes', async () => {
    const { dir, audit } = router(64 * KiB, 3);
    const outside = temp('carapace-audit-victim-');
    const victim = join(outside, 'host-file');
    const victimText = 'the host’s own file\n'.repeat(7);
    writeFileSync(victim, victimText);
    const sink = audit.forSandbox('sb-link');
    sink.emit(refusal(0)); // the current file exists
    // Where the rotation renames to, drops, and creates its next file.
    for (const name of ['sb-link.jsonl.1', 'sb-link.jsonl.2', 'sb-link.jsonl.new'])
      symlinkSync(victim, join(dir, name));
    let n = 0;
    const drops: Line[] = [];
    audit.subscribe((_id, e) => {
      if (e.class_uid === 2004) drops.push(e as unknown as Line);
    });
    for (let i = 0; i < 1_500; i++) sink.emit(refusal(++n)); // several rotations
    await audit.dropsCounted();
    audit.flush();
    expect(readFileSync(victim, 'utf8')).toBe(victimText); // never written through
    for (const name of readdirSync(dir)) expect(lstatSync(join(dir, name)).isFile()).toBe(true);
    // The symlink dropped as the oldest generation is not read through: no drop counts the
    // victim's 7 lines (every drop is of a real generation, a file of refusals).
    expect(drops.length).toBeGreaterThan(0);
    for (const d of drops) expect(d.unmapped.lines).toBeGreaterThan(100);
  });

  it('refuses a current file that is a symlink instead of appending to its target', () => {
    const { dir, audit } = router(64 * KiB, 3);
    const outside = temp('carapace-audit-victim-');
    const victim = join(outside, 'host-file');
    writeFileSync(victim, 'host\n');
    symlinkSync(victim, join(dir, 'sb-cur.jsonl'));
    expect(() => audit.forSandbox('sb-cur').emit(refusal(1))).toThrow(/ELOOP|symbolic link/);
    expect(readFileSync(victim, 'utf8')).toBe('host\n');
    // The directory held open is the one used: the file set works on names inside it only.
    const held = new AuditDirectory(dir);
    expect(() => new RotatingAuditFile(held, 'sb-cur.jsonl', audit.rotation, () => {})).toThrow(
      /ELOOP|symbolic link/,
    );
    held.close();
  });

  it('with one file kept, starts it again and says what went', async () => {
    const { dir, audit } = router(64 * KiB, 1);
    const drops: Line[] = [];
    audit.subscribe((_id, e) => {
      if (e.class_uid === 2004) drops.push(e as unknown as Line);
    });
    const sink = audit.forSandbox('sb-one');
    for (let n = 1; n <= 400; n++) sink.emit(refusal(n));
    await audit.dropsCounted();
    expect(readdirSync(dir)).toEqual(['sb-one.jsonl']);
    expect(lstatSync(join(dir, 'sb-one.jsonl')).size).toBeLessThanOrEqual(64 * KiB);
    const lines = readHistory(audit.history('sb-one'));
    expect(
      lines
        .map(hostNumber)
        .filter((n) => !Number.isNaN(n))
        .at(-1),
    ).toBe(400);
    expect(drops.length).toBeGreaterThan(0);
    expect(drops[0]!.unmapped).toMatchObject({ file: 'sb-one.jsonl' });
    expect(lines.length + drops.reduce((sum, d) => sum + d.unmapped.lines!, 0)).toBe(400 + drops.length);
  });

  it('removes a deleted sandbox’s files, every generation of them', async () => {
    const { dir, audit } = router(64 * KiB, 3);
    const sink = audit.forSandbox('sb-gone');
    for (let n = 1; n <= 800; n++) sink.emit(refusal(n));
    audit.forSandbox('sb-kept').emit(refusal(1));
    const generations = readdirSync(dir).filter((n) => n.startsWith('sb-gone') && !n.includes('.dropped-'));
    expect(generations.length).toBe(3);
    await audit.remove('sb-gone'); // dropped generations still being counted too
    await audit.dropsCounted();
    expect(readdirSync(dir)).toEqual(['sb-kept.jsonl']);
  });
});
