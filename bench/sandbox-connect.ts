/**
 * What the connect watch costs (native/connect-watch.c): every connect() in a sandbox goes through
 * PID 1 (a seccomp user notification, answered with CONTINUE) when the init has an event fd.
 *
 * The same sandbox (bwrap + carapace-init, Landlock with --bind-port 8000) with and without
 * --event-fd, runs interleaved: a Python agent times each connect() to its own server on the
 * listed port 8000 (the watch reads the address, sees an allowed destination, continues), and to
 * the unlisted 8001 (the watch also finds the socket's type and writes an event line; Landlock
 * answers EACCES). Also PID 1's RSS before and after, to show the watch keeps nothing per call.
 */
import { spawn } from 'node:child_process';
import { chmodSync, copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { MERGED_USR_ROOT } from '../src/sandbox/launch/bwrap-minimal.js';
import { nativeBinary } from '../src/sandbox/native-paths.js';
import { percentiles, type BenchModule, type BenchRow } from './framework.js';
import { BARE_UID, statusKiB } from './sandbox-harness.js';

const CONNECTS = 2000;
const ROUNDS = 3;

const AGENT = `
import json, socket, sys, threading, time
server = socket.socket()
server.bind(("127.0.0.1", 8000))
server.listen(1024)
def drain():
    while True:
        server.accept()[0].close()
threading.Thread(target=drain, daemon=True).start()
def timed(port):
    out = []
    for _ in range(${CONNECTS}):
        s = socket.socket()
        t0 = time.perf_counter_ns()
        try:
            s.connect(("127.0.0.1", port))
        except OSError:
            pass
        out.append((time.perf_counter_ns() - t0) / 1000)
        s.close()
    return out
print("ready", flush=True)
sys.stdin.readline()
result = {"allowed": timed(8000), "refused": timed(8001)}
print(json.dumps(result), flush=True)
sys.stdin.readline()
`;

interface Round {
  allowed: number[];
  refused: number[];
  rssBeforeKiB: number;
  rssAfterKiB: number;
  eventLines: number;
}

function lines(stream: Readable): AsyncIterable<string> {
  return (async function* () {
    let buffered = '';
    for await (const chunk of stream) {
      buffered += String(chunk);
      let nl;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        yield buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
      }
    }
  })();
}

async function round(init: string, watched: boolean): Promise<Round> {
  const args = [
    '--unshare-all',
    '--unshare-user',
    '--disable-userns',
    '--as-pid-1',
    '--die-with-parent',
    '--new-session',
    '--cap-drop',
    'ALL',
    ...MERGED_USR_ROOT,
    '--ro-bind',
    '/etc',
    '/etc',
    '--proc',
    '/proc',
    '--dev',
    '/dev',
    '--tmpfs',
    '/tmp',
    '--ro-bind',
    init,
    '/.carapace/init',
    '--info-fd',
    '3',
    '--',
    '/.carapace/init',
    ...(watched ? ['--event-fd', '4'] : []),
    '--ro',
    '/usr',
    '--ro',
    '/etc',
    '--ro',
    '/proc',
    '--rw',
    '/tmp',
    '--bind-port',
    '8000',
    '--',
    '/usr/bin/python3',
    '-c',
    AGENT,
  ];
  const asRoot = process.getuid?.() === 0;
  const child = spawn('bwrap', args, {
    stdio: ['pipe', 'pipe', 'inherit', 'pipe', 'pipe'],
    env: {},
    ...(asRoot ? { uid: BARE_UID, gid: BARE_UID } : {}),
  });
  const info = child.stdio[3] as Readable;
  let infoText = '';
  info.on('data', (d: Buffer) => (infoText += d.toString()));
  let eventLines = 0;
  (child.stdio[4] as Readable).on('data', (d: Buffer) => {
    for (const byte of d) if (byte === 0x0a) eventLines++;
  });
  const out = lines(child.stdout!)[Symbol.asyncIterator]();
  if ((await out.next()).value !== 'ready') throw new Error('the bench agent did not start');
  const initPid = (JSON.parse(infoText) as { 'child-pid': number })['child-pid'];
  const rssBeforeKiB = statusKiB(initPid, 'VmRSS');
  child.stdin!.write('\n');
  const result = JSON.parse((await out.next()).value as string) as { allowed: number[]; refused: number[] };
  const rssAfterKiB = statusKiB(initPid, 'VmRSS');
  child.stdin!.end('\n');
  await new Promise((resolve) => child.on('close', resolve));
  return { ...result, rssBeforeKiB, rssAfterKiB, eventLines };
}

async function run(): Promise<BenchRow[]> {
  const dir = mkdtempSync(join(tmpdir(), 'carapace-bench-connect-'));
  chmodSync(dir, 0o755);
  const init = join(dir, 'carapace-init');
  copyFileSync(nativeBinary(), init);
  chmodSync(init, 0o755);
  try {
    const on: Round[] = [];
    const off: Round[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      off.push(await round(init, false));
      on.push(await round(init, true));
    }
    const p = (rounds: Round[], key: 'allowed' | 'refused') =>
      percentiles(Float64Array.from(rounds.flatMap((r) => r[key])));
    const [onAllowed, offAllowed, onRefused, offRefused] = [
      p(on, 'allowed'),
      p(off, 'allowed'),
      p(on, 'refused'),
      p(off, 'refused'),
    ];
    const events = on.reduce((n, r) => n + r.eventLines, 0);
    if (events !== ROUNDS * CONNECTS)
      throw new Error(`expected ${ROUNDS * CONNECTS} event lines, got ${events}`);
    const last = on[on.length - 1]!;
    const without = 'without the watch';
    return [
      {
        name: "connect() to the sandbox's own server, p50",
        value: onAllowed.p50,
        unit: 'µs',
        baseline: offAllowed.p50,
        baselineName: without,
      },
      {
        name: "connect() to the sandbox's own server, p99",
        value: onAllowed.p99,
        unit: 'µs',
        baseline: offAllowed.p99,
        baselineName: without,
      },
      {
        name: 'refused connect() (EACCES) and its event line, p50',
        value: onRefused.p50,
        unit: 'µs',
        baseline: offRefused.p50,
        baselineName: without,
      },
      {
        name: 'refused connect() (EACCES) and its event line, p99',
        value: onRefused.p99,
        unit: 'µs',
        baseline: offRefused.p99,
        baselineName: without,
      },
      {
        name: `PID 1 RSS after ${2 * CONNECTS} watched connects`,
        value: last.rssAfterKiB / 1024,
        unit: 'MiB',
        baseline: last.rssBeforeKiB / 1024,
        baselineName: 'before them',
      },
    ];
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export const sandboxConnectBench: BenchModule = { name: 'sandbox-connect', run };
