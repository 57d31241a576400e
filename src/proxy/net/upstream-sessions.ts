/**
 * TLS sessions to upstream servers kept for resumption, one cache per sandbox: a new connection to a
 * server offers the last session (a TLS 1.3 ticket, or a TLS 1.2 ticket or id) that a verified
 * connection of the same sandbox got from it, which spares both sides the certificate chain, its
 * verification and the server's signature (about 0.5 ms of the proxy's CPU per connection here).
 *
 * Threat: a resumed session is not verified again. OpenSSL keeps the verify result of the handshake
 * that made the session, and Node skips `checkServerIdentity` when `isSessionReused()` (both
 * measured on Node 24: test/proxy/upstream-sessions.test.ts). A session offered for another name,
 * port or trust than the one it was verified for would let that connection skip the checks; one
 * sandbox's session offered for another would link the two sandboxes' connections at the server
 * (a ticket is an identifier) and reuse what one sandbox's traffic established. Assumptions:
 * - a cache belongs to one sandbox (SandboxProxy makes one each) and is never shared;
 * - the key is the canonical host whose name the certificate was checked against, the SNI sent,
 *   the port and the identity of the SecureContext that verified it (the CA set, and any client
 *   certificate, live in it: another context is another key);
 * - only sessions of a connection that passed verification are kept ('secureConnect' fired; a
 *   session delivered before it is held until then and dropped if the handshake fails); a failed
 *   handshake that offered one removes it;
 * - a server that changed its certificate cannot decrypt a ticket of its predecessor unless it
 *   holds the same ticket keys (then it is the same operator, as for any TLS client that resumes);
 *   otherwise the handshake is a full one and the new certificate is verified;
 * - entries live at most SESSION_LIFETIME_MS and a cache holds at most `max` (least recently used
 *   go first, and expired ones whenever one is kept): bounded memory per sandbox (a session holds
 *   the server's certificate: ~0.9 KB with the tests' P-256 leaf, a few KB with RSA).
 */
import type tls from 'node:tls';
import type { CanonicalHost } from './host-name.js';

/** How long a session is offered after it was received, whatever the server's own lifetime. */
export const SESSION_LIFETIME_MS = 5 * 60_000;
/** Sessions one sandbox keeps (distinct host, port and trust), by default. */
export const DEFAULT_MAX_SESSIONS = 64;

const contextIds = new WeakMap<tls.SecureContext, number>();
let nextContextId = 1;

/** A number per SecureContext object, for keys: two contexts never share one. */
function contextId(context: tls.SecureContext): number {
  let id = contextIds.get(context);
  if (id === undefined) {
    id = nextContextId++;
    contextIds.set(context, id);
  }
  return id;
}

interface Entry {
  session: Buffer;
  received: number;
}

export class UpstreamSessions {
  private readonly entries = new Map<string, Entry>();

  constructor(
    private readonly max = DEFAULT_MAX_SESSIONS,
    private readonly now: () => number = Date.now,
  ) {}

  /** The key of a connection: the name verified, the SNI sent, the port and the trust context. */
  static keyOf(host: CanonicalHost, servername: string, port: number, context: tls.SecureContext): string {
    return `${contextId(context)}|${host.kind}|${host.host}|${servername}|${port}`;
  }

  /** The session to offer for `key`, if one is kept and still young enough. */
  get(key: string): Buffer | undefined {
    const e = this.entries.get(key);
    if (e === undefined) return undefined;
    if (this.now() - e.received > SESSION_LIFETIME_MS) {
      this.entries.delete(key);
      return undefined;
    }
    return e.session;
  }

  /** Keep `session` (from a verified connection) as the one to offer for `key`. */
  set(key: string, session: Buffer): void {
    const now = this.now();
    this.entries.delete(key);
    this.entries.set(key, { session, received: now });
    // The map is in the order sessions were received: the expired ones are at its front.
    for (const [k, e] of this.entries) {
      if (now - e.received <= SESSION_LIFETIME_MS) break;
      this.entries.delete(k);
    }
    while (this.entries.size > this.max) {
      const oldest = this.entries.keys().next().value as string;
      this.entries.delete(oldest);
    }
  }

  /** Forget the session of `key` (a handshake that offered it failed). */
  delete(key: string): void {
    this.entries.delete(key);
  }

  /** Sessions kept right now. */
  get size(): number {
    return this.entries.size;
  }
}
