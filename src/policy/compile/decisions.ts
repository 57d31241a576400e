/** The questions a compiled policy answers, and the shape of its answers. */
import type { BinaryMatch } from './binary-matcher.js';
import type { QueryInput, RuleView } from './request-rules.js';
import type { Access, Enforcement } from '../schema/schema.js';
import type { Inference } from '../schema/schema-extensions.js';

export interface ConnectQuery {
  /** The host the agent asked for (CONNECT authority or Host header); any case, trailing dot allowed. */
  host: string;
  port: number;
  /** Kernel-resolved path of the calling executable (`/proc/<pid>/exe`); undefined when unknown. */
  binary?: string | undefined;
  /** Kernel-resolved executables of the caller's parents, nearest first, up to the sandbox's init. */
  ancestors?: readonly string[] | undefined;
}

export interface RequestQuery extends ConnectQuery {
  method: string;
  /** The request path, as sent; a `?query` part is split off when `query` is not given. */
  path: string;
  query?: QueryInput | undefined;
}

/** What the proxy needs to know about an endpoint that admitted a connection. */
export interface EndpointView {
  /** Key of the network policy entry. */
  readonly policy: string;
  /** Its display name (`name:`, defaults to the key). */
  readonly name: string;
  /** Index of the endpoint in the entry's `endpoints`. */
  readonly index: number;
  /** The host pattern as written (normalized), or null for a hostless `allowed_ips` endpoint. */
  readonly host: string | null;
  readonly ports: readonly number[];
  /** True when the proxy must terminate TLS and judge each request with decideRequest. */
  readonly inspect: boolean;
  readonly protocol: 'rest' | 'websocket' | 'tcp';
  /** `skip`: never terminate TLS. `auto`: terminate when `inspect` (and the stream is TLS). */
  readonly tls: 'auto' | 'skip';
  /**
   * The endpoint says it speaks TLS (`tls: terminate` or `passthrough`): credentials bound to it
   * must never be put into a request that would reach it in clear text.
   */
  readonly tlsDeclared: boolean;
  readonly enforcement: Enforcement;
  readonly access: Access | null;
  /** Addresses the host may resolve to even when private (SSRF override). Empty: public only. */
  readonly allowedIps: readonly string[];
  /** Names of credentials the proxy may inject into requests to this endpoint. */
  readonly credentials: readonly string[];
}

export interface ConnectDecision {
  /** What the proxy must do: open the connection (true) or refuse it. */
  readonly allowed: boolean;
  /** What the rules say; connection decisions are always enforced, so it equals `allowed`. */
  readonly verdict: 'allow' | 'deny';
  /** Key of the policy entry that decided (the lexicographically first when several match). */
  readonly policy: string | null;
  readonly name: string | null;
  readonly reason: string;
  readonly enforcement: Enforcement;
  /** The deciding endpoint. */
  readonly endpoint: EndpointView | null;
  /** Every endpoint that admits the connection (several entries may cover one host). */
  readonly endpoints: readonly EndpointView[];
  /** True when any admitting endpoint inspects requests: the proxy must terminate TLS. */
  readonly inspect: boolean;
  /** Union of the admitting endpoints' allowed_ips. */
  readonly allowedIps: readonly string[];
  /** Union of the admitting endpoints' credentials. */
  readonly credentials: readonly string[];
  /** Which binary pattern admitted the caller (pattern null: the entry admits any program). */
  readonly binary: BinaryMatch | null;
}

export interface RequestDecision {
  /** What the proxy must do: forward the request (true) or answer 403. */
  readonly allowed: boolean;
  /** What the rules say. `deny` with `allowed: true` means enforcement is audit: log it, let it pass. */
  readonly verdict: 'allow' | 'deny';
  readonly policy: string | null;
  readonly name: string | null;
  readonly reason: string;
  readonly enforcement: Enforcement;
  readonly endpoint: EndpointView | null;
  /** The rule that decided: an allow rule, the access preset, or a deny rule; null when none matched. */
  readonly rule: RuleView | null;
}

export interface PolicyGeneration {
  /** Number of endpoints compiled in. */
  readonly endpointCount: number;
  decideConnect(query: ConnectQuery): ConnectDecision;
  decideRequest(query: RequestQuery): RequestDecision;
  /** Every compiled endpoint, in decision order (policy key, then endpoint index). */
  endpoints(): readonly EndpointView[];
  /**
   * The policy's `inference` section (validated, frozen), or null: the router reads it from the
   * generation in force, so a reload swaps routes and network rules in the same assignment.
   */
  readonly inference: Inference | null;
}
