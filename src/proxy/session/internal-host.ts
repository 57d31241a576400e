/**
 * The "internal host" port: names such as `inference.local` that no DNS knows and no policy grants,
 * served inside the host process by a handler given to the proxy at construction (the router, for
 * inference.local). The proxy does not import the handler; it hands it, per upstream connection, a
 * caller (the sandbox, the calling process, the policy generation in force) and gets back a duplex
 * that speaks HTTP/1.1 as a server would.
 *
 * Threat: an agent reaching something through the internal name it could not reach otherwise, or
 * smuggling requests past the handler. Assumptions and decisions:
 * - an internal name is served on ports 443 (TLS terminated with the sandbox's own CA) and 80 (plain
 *   HTTP, forward-proxy or in a CONNECT tunnel); anything else is refused. The bytes never leave the
 *   host process, so plain HTTP is no exposure;
 * - the handler is the only "upstream": nothing is resolved or connected for an internal name, so
 *   the SSRF guard does not apply and no network grant is needed or consulted;
 * - requests are parsed strictly and re-serialised by the proxy exactly as for any inspected
 *   endpoint (l7-session.ts), so the handler never sees an ambiguous frame; credential
 *   placeholders are not substituted (the handler strips the agent's credentials anyway);
 * - the handler reads the policy generation per request (`caller.policy()`), so a reload applies to
 *   the next request of a kept-alive connection, as for every other request.
 */
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import type { PolicyGeneration } from '../../policy/index.js';
import type { Authority } from '../net/host-name.js';
import type { RequestHead } from '../http/http-head.js';
import { L7Session } from './l7-session.js';
import { printable } from '../../policy/printable.js';
import { sniffProtocol } from '../http/protocol-sniff.js';
import { CONNECT_ESTABLISHED, forbidden } from './responses.js';
import { COST } from '../budget/sandbox-budget.js';
import type { ClientConnection } from '../sandbox-context.js';
import { StreamReader, writeAll } from '../http/stream-reader.js';

/** Who opens a connection to an internal host. */
export interface InternalHostCaller {
  /** The sandbox, as the proxy knows it (the name it was attached with: the gateway's id). */
  readonly sandbox: string;
  readonly pid: number | undefined;
  /** The calling executable (in-sandbox path), as the kernel reports it. */
  readonly binary: string;
  /** The internal name asked for (canonical: lower case). */
  readonly host: string;
  /** The sandbox's policy generation in force now: read it per request. */
  policy(): PolicyGeneration;
  /** Its number (1 at attach, +1 per reload), for audit events. */
  generation(): number;
}

export interface InternalHost {
  /** Names this handler serves, lower case (e.g. `inference.local`). */
  readonly names: readonly string[];
  /**
   * A new connection to the handler: the proxy writes requests into the returned duplex and reads
   * responses from it (HTTP/1.1, keep-alive allowed). Closing it ends the connection.
   */
  open(caller: InternalHostCaller): Duplex;
}

/** Ports an internal name is served on. */
export const INTERNAL_PORTS: ReadonlySet<number> = new Set([80, 443]);

/** The internal hosts of one proxy, by name. */
export class InternalHosts {
  private readonly byName = new Map<string, InternalHost>();

  constructor(hosts: readonly InternalHost[] = []) {
    for (const h of hosts) for (const n of h.names) this.byName.set(n.toLowerCase(), h);
  }

  /** The handler of a canonical host name, or null. */
  lookup(host: string): InternalHost | null {
    return this.byName.get(host) ?? null;
  }

  get size(): number {
    return this.byName.size;
  }
}

/** The caller object a handler receives for a connection of `conn`. */
export function internalCaller(conn: ClientConnection, host: string): InternalHostCaller {
  const { sb, caller } = conn;
  return {
    sandbox: sb.name,
    pid: caller.pid,
    binary: caller.binary,
    host,
    policy: () => sb.current().source,
    generation: () => sb.current().generation,
  };
}

/**
 * A CONNECT to an internal name: 200, then TLS with the sandbox's CA (or plain HTTP), then every
 * request served by an L7 session whose upstream is the handler.
 */
export async function connectInternal(
  conn: ClientConnection,
  head: RequestHead,
  target: Authority,
): Promise<void> {
  void head;
  const { sb, caller } = conn;
  const { host, port } = target;
  const generation = sb.current().generation;
  if (!INTERNAL_PORTS.has(port)) {
    const reason = `${host} is served on ports 443 (https) and 80 (http) only`;
    sb.audit.connect({
      disposition: 'blocked',
      host,
      port,
      caller,
      reason,
      generation,
      srcPort: conn.srcPort,
    });
    if (!conn.socket.destroyed)
      await new Promise<void>((resolve) =>
        conn.socket.end(forbidden({ host, port, binary: caller.binary, reason }, sb.heldBy), resolve),
      );
    return;
  }
  sb.audit.connect({
    disposition: 'allowed',
    host,
    port,
    caller,
    reason: 'an internal host, served inside Carapace',
    generation,
    srcPort: conn.srcPort,
  });
  await writeAll(conn.socket, CONNECT_ESTABLISHED);
  const protocol = await sniffProtocol(conn.reader);
  if (protocol === 'closed') return void conn.socket.destroy();
  if (protocol === 'http') {
    await new L7Session(conn, conn.socket, conn.reader, {
      kind: 'tunnel',
      host: target,
      port,
      tls: false,
    }).run();
    return;
  }
  if (protocol === 'other') {
    sb.audit.closed({ host, port, caller, reason: 'neither TLS nor HTTP to an internal host', generation });
    return void conn.socket.destroy();
  }
  // One handshake, with the agent (there is no upstream TLS): charged before it is made.
  const turn = sb.budget.spend(COST.tlsHandshake);
  if (turn) await turn;
  if (conn.socket.destroyed) return;
  const client = await secureClient(conn, target);
  if (client === null) return;
  await new L7Session(conn, client, new StreamReader(client), {
    kind: 'tunnel',
    host: target,
    port,
    tls: true,
  }).run();
}

/**
 * The agent's side of a terminated tunnel: a TLS server socket with a leaf for `target` from the
 * sandbox's CA. Null when the handshake did not complete or the SNI names another host (a finding).
 */
export async function secureClient(conn: ClientConnection, target: Authority): Promise<tls.TLSSocket | null> {
  const { sb, caller } = conn;
  // Hand the bytes already read back to the socket so the TLS server sees the whole ClientHello.
  const rest = conn.reader.detach();
  if (rest.length > 0) conn.socket.unshift(rest);
  const client = new tls.TLSSocket(conn.socket, {
    isServer: true,
    secureContext: sb.authority.contextFor(target),
    ALPNProtocols: ['http/1.1'],
  });
  client.on('error', () => client.destroy());
  // An agent that leaves during the handshake ends the stream ('end'): the TLS socket inherits the
  // connection's half-open mode and would otherwise wait, holding the connection, for a peer that
  // is gone.
  const secured = await new Promise<boolean>((resolve) => {
    client.once('secure', () => resolve(true));
    client.once('close', () => resolve(false));
    client.once('end', () => resolve(false));
  });
  if (!secured || client.destroyed) {
    client.destroy();
    return null;
  }
  const sni = (client as unknown as { servername?: string | false }).servername;
  if (sni && sni.toLowerCase().replace(/\.$/, '') !== target.host) {
    sb.audit.finding({
      kind: 'sni-mismatch',
      title: `SNI differs from the CONNECT host ${target.host}`,
      caller,
      host: target.host,
      port: target.port,
      details: { sni: printable(sni.slice(0, 253)) },
    });
    client.destroy();
    return null;
  }
  return client;
}
