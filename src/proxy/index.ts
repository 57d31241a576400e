/** The egress proxy: the only entry point other folders import (docs/architecture.md, docs/proxy.md). */
export {
  EgressProxy,
  SandboxProxy,
  ProxyError,
  type EgressProxyOptions,
  type AttachOptions,
  type GenerationChange,
  type ProxyCounters,
} from './egress-proxy.js';
export {
  budgetsFor,
  COST,
  type ProxyBudgets,
  type BudgetLimits,
  type BudgetStats,
} from './budget/sandbox-budget.js';
export { TlsAuthority, TlsAuthorityError, type TlsAuthorityOptions } from './tls/tls-authority.js';
export {
  sandboxProxyEnv,
  buildCaBundle,
  writeTrustFiles,
  DEFAULT_SYSTEM_BUNDLE,
  SANDBOX_CA_PATH,
  SANDBOX_BUNDLE_PATH,
  type SandboxEnvOptions,
  type TrustFiles,
} from './sandbox-env.js';
export {
  ProcCallerResolver,
  type CallerResolver,
  type CallerQuery,
  type CallerIdentity,
  type CallerResult,
  type ProcCallerResolverOptions,
} from './identity/caller-identity.js';
export { BinaryTrust } from './identity/binary-trust.js';
export { AddressGuardConfigError } from './net/address-guard.js';
export { PLACEHOLDER_PREFIX } from './credentials.js';
export { INTERNAL_PORTS, type InternalHost, type InternalHostCaller } from './session/internal-host.js';
export { sharedUpstreamTrust, type UpstreamTrust } from './net/upstream.js';
export type { HeldBy } from './session/responses.js';
