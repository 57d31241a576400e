/**
 * CONNECT: decide (host, port, binary), check the resolved addresses, connect, answer 200, then either
 * terminate TLS and inspect every request, or relay raw bytes after checking the ClientHello.
 *
 * Threat: a tunnel to an allowed name used to reach something else — domain fronting through SNI, a
 * different virtual host in plain HTTP, or a removed permission kept alive by a long tunnel.
 * Decisions (documented in docs/proxy.md):
 * - TLS is terminated when the endpoint is inspected or has a bound credential, unless `tls: skip`;
 * - raw tunnels: the first client bytes decide. A TLS ClientHello must carry an SNI equal to the CONNECT
 *   host (mismatch → close + finding); a ClientHello WITHOUT SNI is refused for a DNS host (every
 *   mainstream stack sends SNI for a name, so its absence is a crafted hello) and expected for an IP
 *   literal (RFC 6066 forbids IPs in SNI). Plain HTTP is served request by request (Host checked).
 *   Anything else is relayed as the L4 decision allowed it. If the server speaks first (SMTP, SSH
 *   banners) the bytes are relayed raw at once;
 * - terminated tunnels: a plain-HTTP client is inspected the same way; bytes that are neither TLS nor
 *   HTTP cannot be inspected and close the tunnel;
 * - `tls: skip` relays raw from the first byte, without any check.
 */
import { parseClientHello } from '../tls/client-hello.js';
import { type Authority, HostNameError, canonicalHost, parseAuthority } from '../net/host-name.js';
import type { RequestHead } from '../http/http-head.js';
import { L7Session, type UpstreamSlot } from './l7-session.js';
import type { ConnectVerdict, EndpointTreatment } from '../policy-port.js';
import { printable } from '../../policy/printable.js';
import { sniffProtocol } from '../http/protocol-sniff.js';
import { spliceRaw } from './raw-relay.js';
import { COST } from '../budget/sandbox-budget.js';
import { guardHint } from '../net/address-guard.js';
import { CONNECT_ESTABLISHED, type DenialHint, badGateway, badRequest, forbidden } from './responses.js';
import type { ClientConnection } from '../sandbox-context.js';
import { StreamReader, writeAll } from '../http/stream-reader.js';
import { UpstreamError, connectChecked, startTls } from '../net/upstream.js';
import { connectInternal, secureClient } from './internal-host.js';

const DEFAULT_TREATMENT: EndpointTreatment = {
  inspect: false,
  protocol: 'tcp',
  tls: 'terminate',
  allowedIps: [],
  credentials: [],
  hostLocal: false,
  tlsDeclared: false,
};

/**
 * A CONNECT's Host header names either the target or, as Node's http client and others send it, the
 * proxy itself (the relay on the sandbox's loopback). Anything else is a confused or forged request.
 */
function namesTargetOrProxy(host: string, target: string): boolean {
  return host === target || host === '127.0.0.1' || host === '::1' || host === 'localhost';
}

async function answer(conn: ClientConnection, text: string): Promise<void> {
  if (conn.socket.destroyed) return;
  await new Promise<void>((resolve) => conn.socket.end(text, resolve));
}

export async function handleConnect(conn: ClientConnection, head: RequestHead): Promise<void> {
  const { sb, caller } = conn;
  let target: Authority;
  try {
    target = parseAuthority(head.target);
    if (head.host !== null && !namesTargetOrProxy(parseAuthority(head.host, target.port).host, target.host)) {
      throw new HostNameError('Host header differs from the CONNECT target');
    }
  } catch (err) {
    const reason = err instanceof HostNameError ? err.reason : 'invalid CONNECT target';
    sb.audit.connect({
      disposition: 'blocked',
      host: '(invalid)',
      port: 0,
      caller,
      reason,
      generation: sb.current().generation,
      srcPort: conn.srcPort,
    });
    return answer(conn, badRequest(reason));
  }
  const { host, port } = target;
  // A name served inside Carapace (inference.local): no policy, no resolution, no upstream.
  if (sb.internalHost(host) !== null) return connectInternal(conn, head, target);
  const pinned = sb.current();
  const verdict: ConnectVerdict = pinned.policy.decideConnect({
    host,
    port,
    binary: caller.binary,
    ancestors: caller.ancestors,
  });
  const record = (disposition: 'allowed' | 'blocked', reason: string, ip?: string): void =>
    sb.audit.connect({
      disposition,
      host,
      port,
      caller,
      policy: verdict.policy,
      enforcement: verdict.enforcement,
      generation: pinned.generation,
      srcPort: conn.srcPort,
      reason,
      ip,
    });
  const deny = async (reason: string, ip?: string, hint?: DenialHint): Promise<void> => {
    record('blocked', reason, ip);
    await answer(conn, forbidden({ host, port, binary: caller.binary, reason, hint }, sb.heldBy));
  };
  if (!verdict.allowed) return deny(verdict.reason);
  const treatment = verdict.endpoint ?? DEFAULT_TREATMENT;
  const guarded = await sb.guard.resolve(target, port, treatment.allowedIps, treatment.hostLocal);
  // A name that does not resolve is the upstream's failure, as a refused connect is: a 502, no
  // denial (a denial would also become a proposal no approval could make work). Still a line: the
  // name is the agent's to choose under a wildcard and the host's resolver asked for it (a channel
  // out, DNS exfiltration, that would otherwise leave no trace).
  if (!guarded.ok && guarded.kind === 'unresolved') {
    record('allowed', `${verdict.reason}; upstream unreachable: ${guarded.reason}`);
    return answer(conn, badGateway(host, port, guarded.reason));
  }
  if (!guarded.ok) return deny(guarded.reason, guarded.address, guardHint(guarded));

  const terminate = treatment.tls !== 'skip' && (treatment.inspect || treatment.credentials.length > 0);
  if (terminate) {
    // Two handshakes (with the upstream, with the agent): the most costly work a sandbox can ask of
    // the proxy, and the one a flood would replay. It waits for its tokens before anything is
    // opened for it.
    const turn = sb.budget.spend(2 * COST.tlsHandshake);
    if (turn) await turn;
    if (conn.socket.destroyed) return;
  }
  let upstream: UpstreamSlot;
  try {
    const { socket, address } = await connectChecked(guarded.addresses, port);
    record('allowed', verdict.reason, address.address);
    upstream = {
      key: '',
      socket,
      reader: new StreamReader(socket),
      address: address.address,
      generation: pinned.generation,
    };
  } catch (err) {
    return answer(conn, badGateway(host, port, err instanceof UpstreamError ? err.reason : 'connect failed'));
  }
  try {
    await writeAll(conn.socket, CONNECT_ESTABLISHED);
    if (treatment.tls === 'skip') return relay(conn, upstream, target);
    if (terminate) return await terminateTunnel(conn, upstream, target);
    return await rawTunnel(conn, upstream, target);
  } catch (err) {
    // The client vanished or sent a bad frame before the tunnel was set up: the upstream goes too.
    upstream.socket.destroy();
    throw err;
  }
}

/** Splices a raw tunnel (nothing of it inspected) to an upstream checked under `up.generation`. */
function relay(conn: ClientConnection, up: UpstreamSlot, target: Authority): void {
  spliceRaw(conn, {
    client: conn.socket,
    upstream: up.socket,
    clientRest: conn.reader.detach(),
    upstreamRest: up.reader.detach(),
    host: target.host,
    port: target.port,
    address: up.address,
    inspected: false,
    generation: up.generation,
  });
}

function closeBoth(conn: ClientConnection, up: UpstreamSlot): void {
  conn.socket.destroy();
  up.socket.destroy();
}

async function rawTunnel(conn: ClientConnection, up: UpstreamSlot, target: Authority): Promise<void> {
  const { sb, caller } = conn;
  await Promise.race([conn.reader.waitData(), up.reader.waitData()]);
  // The server spoke first, or the client ended: relay whatever comes.
  if (conn.reader.buffered === 0) return relay(conn, up, target);
  const protocol = await sniffProtocol(conn.reader);
  if (protocol === 'tls') {
    const hello = await readHello(conn.reader);
    const finding = (
      kind: 'sni-mismatch' | 'sni-missing',
      title: string,
      details: Record<string, unknown>,
    ): void => {
      sb.audit.finding({ kind, title, caller, host: target.host, port: target.port, reason: title, details });
      sb.audit.closed({
        host: target.host,
        port: target.port,
        caller,
        reason: title,
        generation: sb.current().generation,
      });
      closeBoth(conn, up);
    };
    if (hello.status === 'error')
      return finding('sni-mismatch', `unreadable ClientHello: ${hello.reason}`, {});
    if (hello.status === 'done') {
      if (hello.sni === null) {
        if (target.kind === 'dns')
          return finding('sni-missing', `ClientHello without SNI for ${target.host}`, {});
      } else {
        let sni: string | null = null;
        try {
          sni = canonicalHost(hello.sni, false).host;
        } catch {
          sni = null;
        }
        if (sni !== target.host) {
          return finding('sni-mismatch', `SNI differs from the CONNECT host ${target.host}`, {
            sni: printable(hello.sni.slice(0, 253)),
          });
        }
      }
    }
    return relay(conn, up, target);
  }
  if (protocol === 'http') return plainHttp(conn, up, target);
  return relay(conn, up, target);
}

/** Plain HTTP inside a tunnel: every request judged (Host, path, placeholders), as in a forward one. */
async function plainHttp(conn: ClientConnection, up: UpstreamSlot, target: Authority): Promise<void> {
  const session = new L7Session(
    conn,
    conn.socket,
    conn.reader,
    { kind: 'tunnel', host: target, port: target.port, tls: false },
    { ...up, key: `p|${target.host}|${target.port}` },
  );
  await session.run();
}

/** Accumulate the ClientHello (it may span several reads), keeping all bytes for the upstream. */
async function readHello(reader: StreamReader): Promise<ReturnType<typeof parseClientHello>> {
  let buf = Buffer.alloc(0);
  for (;;) {
    const chunk = await reader.read();
    if (chunk === null) {
      reader.unshift(buf);
      return { status: 'error', reason: 'connection closed inside the ClientHello' };
    }
    buf = Buffer.concat([buf, chunk]);
    const parsed = parseClientHello(buf);
    if (parsed.status !== 'incomplete') {
      reader.unshift(buf);
      return parsed;
    }
  }
}

async function terminateTunnel(conn: ClientConnection, up: UpstreamSlot, target: Authority): Promise<void> {
  const { sb, caller } = conn;
  let upstreamTls: import('node:tls').TLSSocket;
  const protocol = await sniffProtocol(conn.reader);
  if (protocol === 'closed') return closeBoth(conn, up);
  if (protocol === 'http') return plainHttp(conn, up, target);
  if (protocol === 'other') {
    sb.audit.closed({
      host: target.host,
      port: target.port,
      caller,
      reason: 'neither TLS nor HTTP on an inspected endpoint',
      generation: sb.current().generation,
    });
    return closeBoth(conn, up);
  }
  try {
    upstreamTls = await startTls(up.socket as import('node:net').Socket, target, sb.upstreamTls, {
      sessions: sb.upstreamSessions,
      port: target.port,
    });
  } catch (err) {
    sb.audit.closed({
      host: target.host,
      port: target.port,
      caller,
      reason: err instanceof UpstreamError ? err.reason : 'upstream TLS failed',
      generation: sb.current().generation,
    });
    return closeBoth(conn, up);
  }
  up.reader.detach();
  const client = await secureClient(conn, target);
  if (client === null) return void upstreamTls.destroy();
  client.on('error', () => upstreamTls.destroy());
  const slot: UpstreamSlot = {
    key: `s|${target.host}|${target.port}`,
    socket: upstreamTls,
    reader: new StreamReader(upstreamTls),
    address: up.address,
    generation: up.generation,
  };
  const session = new L7Session(
    conn,
    client,
    new StreamReader(client),
    { kind: 'tunnel', host: target, port: target.port, tls: true },
    slot,
  );
  await session.run();
}
