/**
 * What every connection handler of one sandbox shares: its name, audit, SSRF guard, TLS material,
 * caller resolver, the CURRENT policy generation (read at each decision, never cached by a
 * connection) and the registry of raw tunnels that a reload must re-judge.
 */
import type net from 'node:net';
import type tls from 'node:tls';
import type { AddressGuard } from './net/address-guard.js';
import type { PolicyGeneration } from '../policy/index.js';
import type { CallerIdentity, CallerResolver } from './identity/caller-identity.js';
import type { InternalHost } from './session/internal-host.js';
import type { ProxyPolicy } from './policy-port.js';
import type { ProxyAudit } from './proxy-audit.js';
import type { SandboxBudget } from './budget/sandbox-budget.js';
import type { StreamReader } from './http/stream-reader.js';
import type { TlsAuthority } from './tls/tls-authority.js';
import type { UpstreamSessions } from './net/upstream-sessions.js';
import type { HeldBy } from './session/responses.js';

export interface PinnedGeneration {
  policy: ProxyPolicy;
  /** 1 for the policy given at attach, +1 for each setGeneration. */
  generation: number;
  /** The compiled generation itself (internal hosts read their own sections of it). */
  source: PolicyGeneration;
}

/** A tunnel whose bytes pass uninspected; re-judged at every reload. */
export interface OpenTunnel {
  host: string;
  port: number;
  caller: CallerIdentity;
  /** The upstream address actually connected. */
  address: string;
  /** Allowed as an inspected endpoint (a WebSocket after its judged upgrade); a raw tunnel is not, so
   * a reload that turns inspection on for its endpoint closes it. */
  inspected: boolean;
  /** The policy generation it was allowed under: a later one re-judges it when it is tracked. */
  generation: number;
  close(reason: string): void;
}

export interface SandboxContext {
  readonly name: string;
  /** Who holds the sandbox: what a denial's hint tells to do (responses.ts). */
  readonly heldBy: HeldBy;
  readonly audit: ProxyAudit;
  readonly guard: AddressGuard;
  readonly upstreamTls: tls.SecureContext;
  /** This sandbox's upstream TLS sessions, offered again to the same host, port and trust. */
  readonly upstreamSessions: UpstreamSessions;
  readonly authority: TlsAuthority;
  readonly callerResolver: CallerResolver;
  current(): PinnedGeneration;
  /** The handler serving a canonical host name inside Carapace (inference.local), or null. */
  internalHost(host: string): InternalHost | null;
  credentials(): ReadonlyMap<string, string>;
  /** An unexpected error in a connection handler (the connection is closed; the proxy goes on). */
  internalError(err: unknown): void;
  /** native/carapace-pump, to which bulk raw tunnels are handed (null: keep them in Node). */
  readonly tunnelPump: string | null;
  /** Puts a tunnel pump's process where the sandbox's own are (its cgroups); throws if it cannot. */
  adoptPump(pid: number): void;
  /** What the proxy may spend on this sandbox: bytes held, CPU work (sandbox-budget.ts). */
  readonly budget: SandboxBudget;
  /** Bytes a tunnel pump delivered, as it reports them (the sandbox's byte counters). */
  countPumped(fromSandbox: number, toSandbox: number): void;
  /** Register a raw tunnel; returns the function that unregisters it. */
  track(tunnel: OpenTunnel): () => void;
}

/** One client connection on the sandbox's socket, after the relay header. */
export interface ClientConnection {
  sb: SandboxContext;
  socket: net.Socket;
  reader: StreamReader;
  srcPort: number;
  caller: CallerIdentity;
}

/** Where an L7 session sends its requests. */
export type SessionMode =
  | { kind: 'forward' }
  | { kind: 'tunnel'; host: import('./net/host-name.js').CanonicalHost; port: number; tls: boolean };

export const UNKNOWN_BINARY = '(unknown)';
