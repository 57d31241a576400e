/**
 * Connections to upstream servers: TCP to an address the SSRF guard has checked (an IP literal, so
 * nothing is resolved again here), then, for terminated tunnels, TLS verified against Node's roots
 * (Mozilla's list), the host's own store (the bundle curl and apt read: a CA its administrator
 * added, such as a TLS-inspecting firewall's, is trusted as the host's other programs trust it) and
 * the operator's CA file, with SNI and hostname verification for the canonical host.
 */
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import type { CheckedAddress } from './address-guard.js';
import type { CanonicalHost } from './host-name.js';
import { DEFAULT_SYSTEM_BUNDLE } from '../sandbox-env.js';
import { UpstreamSessions } from './upstream-sessions.js';

export class UpstreamError extends Error {
  constructor(readonly reason: string) {
    super(reason);
    this.name = 'UpstreamError';
  }
}

export const CONNECT_TIMEOUT_MS = 10_000;

/** OpenSSL's codes for a chain that does not end at a trusted root. */
const UNTRUSTED = new Set([
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
]);

/**
 * What upstream TLS trusts: Node's roots, the host's store (`hostBundle`; none if it is missing)
 * and the PEM certificates in `extraCaFile`. The operator's file is read and checked at once (a
 * bad one is refused before anything runs); the context is built on first use (~13 ms: a run whose
 * sandbox never has TLS terminated does not pay it), then kept for every connection.
 */
export class UpstreamTrust {
  private readonly extra: string[];
  private built: tls.SecureContext | null = null;

  constructor(
    extraCaFile?: string,
    private readonly hostBundle = DEFAULT_SYSTEM_BUNDLE,
  ) {
    this.extra = extraCaFile === undefined ? [] : pemCertificates(readFileSync(extraCaFile, 'utf8'));
    for (const pem of this.extra) {
      try {
        new X509Certificate(pem);
      } catch {
        throw new UpstreamError(
          `${extraCaFile} holds a block that is not a certificate: --upstream-ca takes PEM certificates`,
        );
      }
    }
    if (extraCaFile !== undefined && this.extra.length === 0)
      throw new UpstreamError(
        `no certificate in ${extraCaFile}: --upstream-ca takes CA certificates in PEM (-----BEGIN CERTIFICATE-----)`,
      );
  }

  get context(): tls.SecureContext {
    if (this.built === null) {
      let host: string[] = [];
      try {
        host = pemCertificates(readFileSync(this.hostBundle, 'utf8'));
      } catch {
        // no host store (or none this process may read): Node's roots and the operator's file
      }
      this.built = tls.createSecureContext({
        ca: [...tls.rootCertificates, ...host, ...this.extra],
        minVersion: 'TLSv1.2',
      });
    }
    return this.built;
  }
}

const shared = new Map<string, UpstreamTrust>();

/**
 * One UpstreamTrust per CA file (by its path and text) and host store in a process: the proxy's and
 * the router's (which takes it as a context getter: src/router imports nothing of the proxy's), so
 * the ~13 ms context is built once and a bad file is refused the same way for both.
 */
export function sharedUpstreamTrust(extraCaFile?: string, hostBundle = DEFAULT_SYSTEM_BUNDLE): UpstreamTrust {
  const text = extraCaFile === undefined ? '' : readFileSync(extraCaFile, 'utf8');
  const key = `${hostBundle}\0${extraCaFile ?? ''}\0${text}`;
  let trust = shared.get(key);
  if (trust === undefined) {
    trust = new UpstreamTrust(extraCaFile, hostBundle);
    shared.set(key, trust);
  }
  return trust;
}

/** The context of an UpstreamTrust, built now (tests). */
export function upstreamContext(extraCaFile?: string, hostBundle = DEFAULT_SYSTEM_BUNDLE): tls.SecureContext {
  return new UpstreamTrust(extraCaFile, hostBundle).context;
}

function pemCertificates(text: string): string[] {
  return text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
}

function connectOne(address: CheckedAddress, port: number, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: address.address, port, family: address.family, allowHalfOpen: true });
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new UpstreamError(`connect to ${address.address}:${port} timed out`));
    }, timeoutMs);
    const onError = (err: NodeJS.ErrnoException): void => {
      clearTimeout(timer);
      reject(new UpstreamError(`connect to ${address.address}:${port} failed (${err.code ?? err.message})`));
    };
    sock.once('error', onError);
    sock.once('connect', () => {
      clearTimeout(timer);
      sock.off('error', onError);
      sock.setNoDelay(true);
      // A persistent handler: whoever reads the socket later may detach its own.
      sock.on('error', () => sock.destroy());
      resolve(sock);
    });
  });
}

/** Connect to the first checked address that answers. */
export async function connectChecked(
  addresses: readonly CheckedAddress[],
  port: number,
  timeoutMs = CONNECT_TIMEOUT_MS,
): Promise<{ socket: net.Socket; address: CheckedAddress }> {
  // Errors capture a stack: create one only when something failed.
  let last: UpstreamError | null = null;
  for (const address of addresses) {
    try {
      return { socket: await connectOne(address, port, timeoutMs), address };
    } catch (err) {
      last = err instanceof UpstreamError ? err : new UpstreamError(String(err));
    }
  }
  throw last ?? new UpstreamError('no address to connect to');
}

/** Where startTls keeps and finds sessions to resume (upstream-sessions.ts): one sandbox's cache. */
export interface SessionResumption {
  sessions: UpstreamSessions;
  /** The server's port (part of the key: the socket is the caller's). */
  port: number;
}

/**
 * TLS client over an established socket, verified for `host`. With `resume`, the session a verified
 * connection of the same cache got for the same host, SNI, port and `context` is offered, and this
 * connection's sessions are kept once it is verified (a resumed handshake is not verified again:
 * upstream-sessions.ts says why that is sound).
 */
export function startTls(
  socket: net.Socket,
  host: CanonicalHost,
  context: tls.SecureContext,
  resume?: SessionResumption,
): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    // IP literals carry no SNI (RFC 6066); the certificate must then name the IP.
    const servername = host.kind === 'dns' ? host.host : '';
    const key = resume ? UpstreamSessions.keyOf(host, servername, resume.port, context) : '';
    const options: tls.ConnectionOptions = {
      socket,
      secureContext: context,
      ALPNProtocols: ['http/1.1'],
      servername,
      checkServerIdentity: (_name, cert) => tls.checkServerIdentity(host.host, cert),
      session: resume?.sessions.get(key),
    };
    const t = tls.connect(options);
    let verified = false;
    let early: Buffer | null = null;
    if (resume) {
      // TLS 1.3 tickets come after the handshake; a TLS 1.2 session may come before the checks
      // ran, so it waits for them.
      t.on('session', (session: Buffer) => {
        if (verified) resume.sessions.set(key, session);
        else early = session;
      });
    }
    const timer = setTimeout(() => {
      t.destroy();
      reject(new UpstreamError(`TLS handshake with ${host.host} timed out`));
    }, CONNECT_TIMEOUT_MS);
    const onError = (err: NodeJS.ErrnoException): void => {
      clearTimeout(timer);
      socket.destroy();
      early = null;
      // The session offered (if any) is not offered again: the server may have refused it.
      resume?.sessions.delete(key);
      const code = err.code ?? err.message;
      // A certificate from a CA neither Node's roots nor the host's store holds (a local mirror's).
      const hint = UNTRUSTED.has(code) ? '; to trust its CA, give it with --upstream-ca FILE' : '';
      reject(new UpstreamError(`TLS to ${host.host} failed (${code})${hint}`));
    };
    t.once('error', onError);
    t.once('secureConnect', () => {
      clearTimeout(timer);
      t.off('error', onError);
      t.on('error', () => t.destroy());
      // 'secureConnect' comes only after the chain and the name were verified (rejectUnauthorized
      // is Node's default); `authorized` says so once more before anything is kept.
      verified = t.authorized;
      if (verified && early !== null) resume?.sessions.set(key, early);
      early = null;
      resolve(t);
    });
  });
}
