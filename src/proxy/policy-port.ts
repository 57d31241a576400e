/**
 * What the proxy needs from a compiled policy generation: the two decisions in the contract of
 * docs/architecture.md (`decideConnect`, `decideRequest`), in the shape the proxy reads them.
 *
 * The proxy depends on this interface only; `src/policy/` provides the implementation
 * (`compilePolicy(policy)`), and policy-adapter.ts maps its exported types onto these.
 */

export type Enforcement = 'enforce' | 'audit';

export interface ConnectQuery {
  /** Canonical host (lower case, no trailing dot; IPv6 without brackets). */
  host: string;
  port: number;
  /** Executable of the calling process (in-sandbox path). */
  binary: string;
  /** Executables of its parent chain, nearest first, excluding the sandbox init. */
  ancestors: readonly string[];
}

export interface RequestQuery extends ConnectQuery {
  method: string;
  /** Canonical path (see path-canon.ts): starts with `/`, no dot segments, no query. */
  path: string;
  /** Raw query string without `?` ('' when none). Never logged. */
  query: string;
}

/** How the proxy must treat an allowed endpoint. */
export interface EndpointTreatment {
  /** Every HTTP request is judged by decideRequest (TLS is terminated). */
  inspect: boolean;
  protocol: 'rest' | 'websocket' | 'tcp';
  /** `skip`: never terminate TLS. */
  tls: 'terminate' | 'skip';
  /** CIDRs/addresses the resolved addresses must fall in (unlocks private ranges). */
  allowedIps: readonly string[];
  /** Names of credentials the proxy may put into requests to this endpoint. */
  credentials: readonly string[];
  /**
   * An endpoint naming `host.openshell.internal` / `host.carapace.internal` exactly admitted the
   * connection: that name is the host's loopback (address-guard.ts).
   */
  hostLocal: boolean;
  /** An admitting endpoint declares TLS (`tls: terminate` / `passthrough`): never clear text. */
  tlsDeclared: boolean;
}

export interface ConnectVerdict {
  allowed: boolean;
  /** Key of the matching (or, for a refusal, the closest) network policy entry. */
  policy?: string | undefined;
  reason: string;
  enforcement: Enforcement;
  endpoint?: EndpointTreatment | undefined;
}

export interface RequestVerdict {
  allowed: boolean;
  policy?: string | undefined;
  reason: string;
  enforcement: Enforcement;
}

export interface ProxyPolicy {
  decideConnect(query: ConnectQuery): ConnectVerdict;
  decideRequest(query: RequestQuery): RequestVerdict;
}
