/**
 * Test harness for the egress proxy: loopback upstreams (HTTP and HTTPS with a test CA), a proxy with
 * one attached sandbox, and a client that talks to the sandbox's Unix socket exactly as the relay
 * does (PROXY line first). Nothing leaves 127.0.0.1.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { Writable } from 'node:stream';
import { MemoryAuditLog, type OcsfEvent } from '../../src/audit/index.js';
import { compilePolicy, parsePolicy, type Policy, type PolicyGeneration } from '../../src/policy/index.js';
import { forwardBody } from '../../src/proxy/http/body-forward.js';
import type { Resolver } from '../../src/proxy/net/address-guard.js';
import type { CallerIdentity, CallerResolver } from '../../src/proxy/identity/caller-identity.js';
import { EgressProxy, type SandboxProxy } from '../../src/proxy/egress-proxy.js';
import type { InternalHost } from '../../src/proxy/session/internal-host.js';
import { parseResponseHead } from '../../src/proxy/http/http-response.js';
import { StreamReader } from '../../src/proxy/http/stream-reader.js';
import { TlsAuthority } from '../../src/proxy/tls/tls-authority.js';

/** The policy of `yaml`, parsed; its diagnostics thrown. */
export function parsed(yaml: string): Policy {
  const r = parsePolicy(yaml, 'test.yaml');
  if (!r.ok) throw new Error(r.diagnostics.map((d) => `${d.line}:${d.col} ${d.message}`).join('\n'));
  return r.policy;
}

export function compile(yaml: string): PolicyGeneration {
  return compilePolicy(parsed(yaml));
}

export function fixedCaller(
  binary = '/usr/bin/curl',
  ancestors: string[] = ['/usr/bin/bash'],
  pid = 4242,
): CallerResolver {
  const caller: CallerIdentity = { pid, binary, ancestors };
  return { resolve: async () => ({ ok: true, caller }) };
}

export interface Upstreams {
  ca: TlsAuthority;
  caFile: string;
  httpPort: number;
  httpsPort: number;
  /** Requests seen by either server: method, url, headers. */
  seen: { method: string; url: string; headers: http.IncomingHttpHeaders }[];
  close(): Promise<void>;
}

/** Echo handler: answers JSON describing the request; `/bytes/N` streams N bytes; POST bodies are hashed. */
function handler(seen: Upstreams['seen']): http.RequestListener {
  return (req, res) => {
    seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
    const m = /^\/bytes\/(\d+)$/.exec(req.url ?? '');
    if (m) {
      let left = Number(m[1]);
      const block = Buffer.alloc(64 * 1024, 0x61);
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      const pump = (): void => {
        while (left > 0) {
          const n = Math.min(left, block.length);
          left -= n;
          if (!res.write(block.subarray(0, n))) return void res.once('drain', pump);
        }
        res.end();
      };
      return pump();
    }
    const hash = createHash('sha256');
    let size = 0;
    req.on('data', (d: Buffer) => {
      hash.update(d);
      size += d.length;
    });
    req.on('end', () => {
      const body = JSON.stringify({
        method: req.method,
        url: req.url,
        headers: req.headers,
        size,
        sha256: hash.digest('hex'),
      });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
  };
}

function onUpgrade(req: http.IncomingMessage, socket: import('node:stream').Duplex, head: Buffer): void {
  socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
  if (head.length) socket.write(head);
  socket.pipe(socket as unknown as NodeJS.WritableStream);
  void req;
}

export async function startUpstreams(): Promise<Upstreams> {
  const ca = TlsAuthority.create({ sandbox: 'test-upstream-ca' });
  const dir = mkdtempSync(join(tmpdir(), 'carapace-upstream-'));
  const caFile = join(dir, 'ca.pem');
  writeFileSync(caFile, ca.caPem);
  const seen: Upstreams['seen'] = [];
  const plain = http.createServer(handler(seen));
  const secure = https.createServer(
    { SNICallback: (name, cb) => cb(null, ca.contextFor({ host: name, kind: 'dns' })) },
    handler(seen),
  );
  plain.on('upgrade', onUpgrade);
  secure.on('upgrade', onUpgrade);
  plain.keepAliveTimeout = 30_000;
  secure.keepAliveTimeout = 30_000;
  await new Promise<void>((r) => plain.listen(0, '127.0.0.1', r));
  await new Promise<void>((r) => secure.listen(0, '127.0.0.1', r));
  return {
    ca,
    caFile,
    httpPort: (plain.address() as net.AddressInfo).port,
    httpsPort: (secure.address() as net.AddressInfo).port,
    seen,
    close: async () => {
      plain.closeAllConnections();
      secure.closeAllConnections();
      await Promise.all([new Promise((r) => plain.close(r)), new Promise((r) => secure.close(r))]);
    },
  };
}

export interface Rig {
  proxy: EgressProxy;
  sb: SandboxProxy;
  audit: MemoryAuditLog;
  authority: TlsAuthority;
  socketPath: string;
  up: Upstreams;
  close(): Promise<void>;
}

export interface RigOptions {
  policy: string;
  caller?: CallerResolver;
  credentials?: Map<string, string>;
  hosts?: Record<string, string>;
  allowLocal?: string[] | 'upstreams';
  up?: Upstreams;
  maxConnections?: number;
  /** native/carapace-pump (or a wrapper): bulk raw tunnels are handed to it. */
  tunnelPump?: string;
  /** Names served inside the proxy's process (src/proxy/session/internal-host.ts). */
  internalHosts?: InternalHost[];
  audit?: MemoryAuditLog;
  /** DNS for names outside `hosts` (default: the system's; tests never send queries off the host). */
  resolver?: Resolver;
}

export async function startRig(o: RigOptions): Promise<Rig> {
  const up = o.up ?? (await startUpstreams());
  const audit = o.audit ?? new MemoryAuditLog();
  const allowLocal =
    o.allowLocal === undefined || o.allowLocal === 'upstreams'
      ? [`127.0.0.1:${up.httpPort}`, `127.0.0.1:${up.httpsPort}`]
      : o.allowLocal;
  const proxy = new EgressProxy({
    audit,
    hosts: o.hosts ?? {
      'api.example.test': '127.0.0.1',
      'other.example.test': '127.0.0.1',
      'raw.example.test': '127.0.0.1',
    },
    allowLocal,
    upstreamCaFile: up.caFile,
    tunnelPump: o.tunnelPump,
    internalHosts: o.internalHosts,
    resolver: o.resolver,
    onError: (err) => {
      throw err;
    },
  });
  const authority = TlsAuthority.create({ sandbox: 'sb1' });
  const socketPath = join(mkdtempSync(join(tmpdir(), 'carapace-sock-')), 'proxy.sock');
  const sb = await proxy.attachSandbox({
    name: 'sb1',
    heldBy: 'run',
    socketPath,
    generation: compile(o.policy),
    callerResolver: o.caller ?? fixedCaller(),
    credentials: o.credentials,
    authority,
    maxConnections: o.maxConnections,
  });
  return {
    proxy,
    sb,
    audit,
    authority,
    socketPath,
    up,
    close: async () => {
      await proxy.close();
      if (!o.up) await up.close();
    },
  };
}

/** Connect to the sandbox socket and write the relay's PROXY line. */
export async function relayConnect(socketPath: string, srcPort = 40000): Promise<net.Socket> {
  const s = net.connect(socketPath);
  await new Promise<void>((resolve, reject) => {
    s.once('connect', resolve);
    s.once('error', reject);
  });
  s.write(`PROXY TCP4 127.0.0.1 127.0.0.1 ${srcPort} 3128\r\n`);
  return s;
}

export interface Response {
  status: number;
  head: string;
  body: Buffer;
  json<T = Record<string, unknown>>(): T;
}

/** Reads HTTP responses from a socket, one at a time. */
export class HttpReader {
  readonly reader: StreamReader;
  constructor(readonly socket: import('node:stream').Duplex) {
    this.reader = new StreamReader(socket);
  }

  async response(method = 'GET'): Promise<Response> {
    const bytes = await this.reader.readHead(64 * 1024);
    if (bytes === null) throw new Error('connection closed before a response');
    const head = parseResponseHead(bytes, method);
    const chunks: Buffer[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _e, cb) {
        chunks.push(chunk);
        cb();
      },
    });
    await forwardBody(this.reader, sink, head.body);
    const raw = Buffer.concat(chunks);
    const body = head.body.kind === 'chunked' ? dechunk(raw) : raw;
    return {
      status: head.status,
      head: bytes.toString('latin1'),
      body,
      json: <T>() => JSON.parse(body.toString('utf8')) as T,
    };
  }

  /** Resolves true when the peer closes (end of stream) within `ms`. */
  async closed(ms = 2000): Promise<boolean> {
    return Promise.race([
      (async () => {
        for (;;) {
          const c = await this.reader.read();
          if (c === null) return true;
        }
      })().catch(() => true),
      new Promise<boolean>((r) => setTimeout(() => r(false), ms)),
    ]);
  }
}

/** The payload of a complete chunked body (as forwarded verbatim by forwardBody). */
function dechunk(raw: Buffer): Buffer {
  const out: Buffer[] = [];
  let off = 0;
  for (;;) {
    const eol = raw.indexOf('\r\n', off);
    const size = parseInt(raw.subarray(off, eol).toString('latin1'), 16);
    if (size === 0) return Buffer.concat(out);
    out.push(raw.subarray(eol + 2, eol + 2 + size));
    off = eol + 2 + size + 2;
  }
}

/** Issue a raw request on the socket and read its response. */
export async function send(r: HttpReader, text: string, method = 'GET'): Promise<Response> {
  r.socket.write(text);
  return r.response(method);
}

/** The status a plain GET of `http://host:port/x` gets through the sandbox socket at `socketPath`. */
export async function statusOf(socketPath: string, host: string, port: number): Promise<number> {
  const s = await relayConnect(socketPath);
  try {
    const res = await send(
      new HttpReader(s),
      `GET http://${host}:${port}/x HTTP/1.1\r\nHost: ${host}:${port}\r\n\r\n`,
    );
    return res.status;
  } finally {
    s.destroy();
  }
}

/** CONNECT through the relay socket; returns the socket and the proxy's answer to CONNECT. */
export async function connectTunnel(
  socketPath: string,
  authority: string,
  extraHeaders = '',
): Promise<{ socket: net.Socket; reader: HttpReader; status: number; response: Response }> {
  const socket = await relayConnect(socketPath);
  const reader = new HttpReader(socket);
  socket.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n${extraHeaders}\r\n`);
  const response = await reader.response('CONNECT');
  return { socket, reader, status: response.status, response };
}

/** TLS over an established tunnel, trusting only `ca`; leftover bytes from the reader are replayed. */
export async function tlsOverTunnel(
  t: { socket: net.Socket; reader: HttpReader },
  servername: string,
  ca: string,
): Promise<tls.TLSSocket> {
  const rest = t.reader.reader.detach();
  if (rest.length) t.socket.unshift(rest);
  const s = tls.connect({ socket: t.socket, servername, ca, ALPNProtocols: ['http/1.1'] });
  await new Promise<void>((resolve, reject) => {
    s.once('secureConnect', resolve);
    s.once('error', reject);
  });
  return s;
}

export function eventsOf(audit: MemoryAuditLog, classUid: number): OcsfEvent[] {
  return audit.events.filter((e) => e.class_uid === classUid);
}

export function lastEvent(audit: MemoryAuditLog, classUid: number): OcsfEvent {
  const list = eventsOf(audit, classUid);
  const e = list[list.length - 1];
  if (!e) throw new Error(`no ${classUid} event`);
  return e;
}
