/**
 * Bulk upload through the whole egress path a sandboxed agent uses: python3 inside `carapace run`
 * connects to the relay (127.0.0.1:3128 in the sandbox), which carries the bytes over the sandbox's
 * Unix socket to the proxy in the carapace process, which hands the raw tunnel to the pump after
 * 4 MiB; the upstream is a loopback sink in a worker thread of this process. The baseline is the
 * same python3 script on the host, connected straight to the sink, in the same run.
 *
 * The proxy row (bench/proxy.ts) measures the proxy alone; this one adds the relay, a second hop,
 * so it shows what an agent gets. The script times its own transfers, so the sandbox's start and
 * the CLI's do not count. No target: the target is on the proxy row.
 */
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { TCP_CHILD_EHASH } from '../src/sandbox/host-capabilities.js';
import { packageRoot } from '../src/sandbox/native-paths.js';
import type { BenchModule, BenchRow } from './framework.js';
import type { UpstreamInfo } from './proxy-peer.js';
import { benchHome, median } from './sandbox-harness.js';

const MiB = 1024 * 1024;
const BULK_BYTES = 512 * MiB;
const ROUNDS = 5;
const LATENCY_SAMPLES = 500;
const HOST = 'sink.bench.test';

/**
 * What both client scripts start with: their arguments, and `connect()`, a stream to the upstream
 * either through the relay (`proxy`: CONNECT to 127.0.0.1:3128 inside the sandbox) or direct.
 */
const PRELUDE = `
import socket, struct, sys, time
mode, host, port, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
def connect():
    if mode != 'proxy':
        return socket.create_connection(('127.0.0.1', port))
    s = socket.create_connection(('127.0.0.1', 3128))
    s.sendall(f'CONNECT {host}:{port} HTTP/1.1\\r\\nHost: {host}:{port}\\r\\n\\r\\n'.encode())
    head = b''
    while b'\\r\\n\\r\\n' not in head:
        chunk = s.recv(4096)
        if not chunk: sys.exit('proxy closed the tunnel: ' + repr(head))
        head += chunk
    if not head.startswith(b'HTTP/1.1 200'): sys.exit('proxy refused: ' + repr(head))
    return s
`;

/** Sends 64 MiB to warm up, then `count` bytes; prints MiB/s of the second transfer. */
const CLIENT = `${PRELUDE}
block = b'\\x5a' * (1 << 20)
def transfer(n):
    s = connect()
    t0 = time.perf_counter()
    s.sendall(struct.pack('>Q', n))
    left = n
    while left > 0:
        k = min(left, len(block))
        s.sendall(block if k == len(block) else block[:k])
        left -= k
    if s.recv(1) != b'!': sys.exit('the sink did not confirm')
    s.close()
    return n / (1 << 20) / (time.perf_counter() - t0)
transfer(64 << 20)
print(transfer(count))
`;

/**
 * Opens `count` tunnels to the echo (connect, one byte there and back); prints each in ms. The
 * first WARMUP are not counted: each round is a fresh `carapace run`, and a proxy that has served a
 * few hundred connections (as a running agent's has) is past Node's compiler tiers.
 */
const LATENCY = `${PRELUDE}
WARMUP = 300
def once():
    t0 = time.perf_counter()
    s = connect()
    s.sendall(b'x\\n')  # a line: the proxy decides what a raw tunnel speaks on whole tokens
    if s.recv(1) != b'x': sys.exit('the echo did not answer')
    ms = (time.perf_counter() - t0) * 1000
    s.close()
    return ms
for _ in range(WARMUP): once()
print(' '.join(f'{once():.4f}' for _ in range(count)))
`;

function output(command: string, args: string[], env: NodeJS.ProcessEnv): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += String(d)));
    child.stderr.on('data', (d: Buffer) => (err += String(d)));
    child.once('error', reject);
    child.once('exit', (code) =>
      code === 0 ? resolve(out) : reject(new Error(`${command} exited ${code}: ${err.trim()}`)),
    );
  });
}

async function run(): Promise<BenchRow[]> {
  const home = await benchHome();
  const upstreamThread = new Worker(new URL('./proxy-peer.js', import.meta.url), {
    workerData: { role: 'upstream' },
  });
  try {
    const info = await new Promise<UpstreamInfo>((resolve, reject) => {
      upstreamThread.once('message', resolve);
      upstreamThread.once('error', reject);
    });
    const policy = join(home.dir, 'tunnel.yaml');
    writeFileSync(
      policy,
      [
        'version: 1',
        'filesystem_policy:',
        '  read_only: [/usr, /lib, /lib64, /bin, /sbin, /etc]',
        '  read_write: [/sandbox, /tmp]',
        'network_policies:',
        '  bench:',
        '    endpoints:',
        `      - { host: ${HOST}, port: ${info.sinkPort} }`,
        `      - { host: ${HOST}, port: ${info.echoPort} }`,
        '',
      ].join('\n'),
    );
    const cli = join(packageRoot(), 'dist', 'cli', 'carapace.js');
    const env = { ...process.env, CARAPACE_HOME: home.dir };
    const network = [
      '--policy',
      policy,
      '--resolve',
      `${HOST}=127.0.0.1`,
      ...[info.sinkPort, info.echoPort].flatMap((p) => ['--allow-local', `127.0.0.1:${p}`]),
    ];
    const inSandbox = (script: string, args: string[]) =>
      output(
        process.execPath,
        [cli, 'run', ...network, '--', 'python3', '-c', script, 'proxy', HOST, ...args],
        env,
      );
    const onHost = (script: string, args: string[]) =>
      output('python3', ['-c', script, 'direct', HOST, ...args], env);
    const numbers = (text: string) => text.trim().split(/\s+/).map(Number);

    const latencyArgs = [String(info.echoPort), String(LATENCY_SAMPLES / ROUNDS)];
    const bulkArgs = [String(info.sinkPort), String(BULK_BYTES)];
    const setupSandboxed: number[] = [];
    const setupDirect: number[] = [];
    const bulkSandboxed: number[] = [];
    const bulkDirect: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      setupSandboxed.push(...numbers(await inSandbox(LATENCY, latencyArgs)));
      setupDirect.push(...numbers(await onHost(LATENCY, latencyArgs)));
      bulkSandboxed.push(...numbers(await inSandbox(CLIENT, bulkArgs)));
      bulkDirect.push(...numbers(await onHost(CLIENT, bulkArgs)));
    }
    const setupBaseline = median(setupDirect);
    const ownTable = readFileSync(TCP_CHILD_EHASH, 'utf8').trim() !== '0';
    return [
      {
        name: `tunnel set-up through a sandbox's relay and the proxy, caller lookup (${ownTable ? 'own' : 'shared'} TCP table), p50 of ${setupSandboxed.length}`,
        value: median(setupSandboxed),
        unit: 'ms',
        baseline: setupBaseline,
        baselineName: 'python3 on the host, direct',
        target: { max: setupBaseline + 0.5 },
      },
      {
        name: `upload through a sandbox's relay and the proxy (python3, ${BULK_BYTES / MiB} MiB), median of ${ROUNDS}`,
        value: median(bulkSandboxed),
        unit: 'MiB/s',
        baseline: median(bulkDirect),
        baselineName: 'python3 on the host, direct',
      },
    ];
  } finally {
    await upstreamThread.terminate();
    home.remove();
  }
}

export const sandboxTunnelBench: BenchModule = { name: 'sandbox-tunnel', run };
