/**
 * Shared by the proxy attacks (test/attacks/proxy-*.test.ts): one `carapace run --policy FILE` with
 * the test's loopback upstreams, a small Python HTTP client that talks raw bytes to the relay at
 * 127.0.0.1:3128 from inside, and readers for the audit file the run leaves.
 *
 * Everything stays on loopback: the names the policies use are mapped to 127.0.0.1 with
 * `--resolve`, so the proxy never asks DNS.
 */
import { join } from 'node:path';
import type { Upstreams } from '../proxy/harness.js';
import { networkPolicy, readAudit, runCli, upstreamOptions, type AuditLine } from '../helpers/network.js';
import { sharedTempDir } from '../helpers/sandbox.js';

export interface Outcome {
  status: number | null;
  stdout: string;
  stderr: string;
  /** stdout's lines that are JSON, parsed (what the Python client prints). */
  results: Exchange[];
  audit: AuditLine[];
}

/** What the client saw on one connection: every response it could parse, and how it ended. */
export interface Exchange {
  label?: string;
  responses: { status: number; body: string }[];
  /** `closed`: end of stream; `reset`: an error (RST, TLS alert); `timeout`: still open after 30 s. */
  end: 'closed' | 'reset' | 'timeout';
  /** The client's source port: the proxy's 4001 events name it (src_endpoint.port). */
  port: number;
  [k: string]: unknown;
}

export interface RunSetup {
  /** YAML under network_policies (see networkPolicy). */
  network: string;
  up: Upstreams;
  /** Names mapped to 127.0.0.1 for the proxy. */
  names: string[];
  /** More `carapace run` options (--credential, --workspace, --allow-local …). */
  options?: string[];
  env?: NodeJS.ProcessEnv;
  home?: string;
  /** Where the audit file goes (a fresh directory by default). */
  auditFile?: string;
}

export async function runInside(setup: RunSetup, command: string[]): Promise<Outcome> {
  const audit = setup.auditFile ?? join(sharedTempDir(), 'audit.jsonl');
  const r = await runCli(
    [
      'run',
      '--policy',
      networkPolicy(setup.network),
      '--audit',
      audit,
      ...upstreamOptions(setup.names, [setup.up.httpPort, setup.up.httpsPort], setup.up.caFile),
      ...(setup.options ?? []),
      '--',
      ...command,
    ],
    { home: setup.home, env: setup.env },
  );
  const results = r.stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Exchange);
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, results, audit: readAudit(audit) };
}

/** Events of class `cls` that record a refusal (disposition Blocked). */
export const refusals = (audit: AuditLine[], cls: 4001 | 4002): AuditLine[] =>
  audit.filter((e) => e.class_uid === cls && e.disposition_id === 2);

/** The 4001 refusal of the connection from source port `port`. */
export const refusalFrom = (audit: AuditLine[], port: number | undefined): AuditLine | undefined =>
  refusals(audit, 4001).find((e) => (e.src_endpoint as { port?: number } | undefined)?.port === port);

/**
 * Findings about the host rather than the sandbox: `mask-restored` lands in every running
 * sandbox's trail whenever the host replaces /etc/passwd and the like, which other test files do
 * (useradd) at any moment.
 */
const HOST_FINDINGS = new Set(['mask-restored']);

/** The findings (2004) about what the sandbox did, in the order they were recorded. */
export const sandboxFindings = (audit: AuditLine[]): AuditLine[] =>
  audit.filter((e) => e.class_uid === 2004 && !HOST_FINDINGS.has(e.finding_info?.uid ?? ''));

/** Their kinds. */
export const findings = (audit: AuditLine[]): string[] =>
  sandboxFindings(audit).map((e) => e.finding_info?.uid ?? '');

export const reasonOf = (e: AuditLine | undefined): string => String(e?.unmapped.reason ?? '');

export const hostOf = (e: AuditLine | undefined): string =>
  String((e?.dst_endpoint as { hostname?: string } | undefined)?.hostname ?? '');

export const binaryOf = (e: AuditLine | undefined): string =>
  String((e?.actor as { process?: { file?: { path?: string } } } | undefined)?.process?.file?.path ?? '');

/** Text whose latin1 bytes are the UTF-8 bytes of `s`: how a non-ASCII name goes on the wire. */
export const utf8Wire = (s: string): string => Buffer.from(s, 'utf8').toString('latin1');

/**
 * A Python prelude for inside the sandbox:
 * - `exchange(chunks, label)`: a new connection to the relay, each chunk sent as latin-1 bytes,
 *   then everything read until the proxy closes; prints one JSON line (an Exchange);
 * - `probe_connect(authority, label)`: a CONNECT whose answer alone is reported (a 200 is not kept);
 * - `tunnel(authority)`: a connection after a CONNECT the proxy answered 200 (else None, printed);
 * - `over_tls(sock, sni)`: TLS on a tunnel, trusting the sandbox's CA bundle (SSL_CERT_FILE), with
 *   the given SNI (None: no SNI) and without checking the name, so a mismatch gets past the client;
 * - `converse(sock, chunks, label)`: the same as `exchange` on an existing (tunnel) socket.
 */
const PRELUDE = String.raw`
import json, socket, ssl, sys

def _read_all(s):
    s.settimeout(30)
    data, end = b'', 'closed'
    while True:
        try:
            d = s.recv(65536)
        except socket.timeout:
            end = 'timeout'; break
        except (ssl.SSLError, OSError):
            end = 'reset'; break
        if not d:
            break
        data += d
    return data, end

def _responses(data):
    out = []
    while True:
        i = data.find(b'\r\n\r\n')
        if i < 0:
            return out
        lines = data[:i].decode('latin-1').split('\r\n')
        data = data[i + 4:]
        n = 0
        for line in lines[1:]:
            k, _, v = line.partition(':')
            if k.strip().lower() == 'content-length':
                n = int(v.strip())
        out.append({'status': int(lines[0].split(' ')[1]), 'body': data[:n].decode('latin-1')})
        data = data[n:]

def converse(s, chunks, label=None, **extra):
    port = s.getsockname()[1]
    try:
        for c in chunks:
            s.sendall(c.encode('latin-1'))
    except OSError:
        pass
    data, end = _read_all(s)
    print(json.dumps(dict(label=label, port=port, responses=_responses(data), end=end, **extra)), flush=True)

def exchange(chunks, label=None):
    converse(socket.create_connection(('127.0.0.1', 3128)), chunks, label)

def tunnel(authority, label=None):
    s = socket.create_connection(('127.0.0.1', 3128))
    s.sendall(('CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n' % (authority, authority)).encode())
    head = b''
    while b'\r\n\r\n' not in head:
        d = s.recv(1)
        if not d:
            break
        head += d
    if not head.startswith(b'HTTP/1.1 200'):
        rest, end = _read_all(s)
        out = dict(label=label, port=s.getsockname()[1], responses=_responses(head + rest), end=end)
        print(json.dumps(out), flush=True)
        return None
    return s

def probe_connect(authority, label=None):
    """CONNECT and report only the proxy's answer: a 200 is not waited past, a refusal is read to
    its end (the proxy closes after it)."""
    s = socket.create_connection(('127.0.0.1', 3128))
    port = s.getsockname()[1]
    s.sendall(('CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n' % (authority, authority)).encode('latin-1'))
    head = b''
    while b'\r\n\r\n' not in head:
        d = s.recv(1)
        if not d:
            break
        head += d
    rest, end = (b'', 'closed') if head.startswith(b'HTTP/1.1 200') else _read_all(s)
    s.close()
    print(json.dumps(dict(label=label, port=port, responses=_responses(head + rest), end=end)), flush=True)

def over_tls(s, sni):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx.wrap_socket(s, server_hostname=sni)
`;

/** `python3 -c PRELUDE + body`. */
export function python(body: string): string[] {
  return ['python3', '-c', `${PRELUDE}\n${body}`];
}

/** A Python literal for `s` (JSON strings are valid Python string literals). */
export const py = (s: unknown): string => JSON.stringify(s);
