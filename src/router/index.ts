/**
 * The privacy router (`inference.local`): the only entry point other folders import
 * (docs/router.md). It depends on src/policy and src/audit only; the proxy reaches it through its
 * internal-host port, the gateway and `carapace run` give it providers and a usage store.
 */
export { InferenceRouter, INFERENCE_HOST, type InferenceRouterOptions, type RouterCaller } from './router.js';
export {
  PROVIDER_INFO,
  API_NAMES,
  apiUrl,
  authHeaders,
  type Api,
  type ProviderConfig,
  type ProviderDirectory,
  type ProviderType,
} from './providers.js';
export {
  MemoryUsageStore,
  UsageLedger,
  hourOf,
  type UsageRow,
  type UsageStore,
  type UsageCounts,
} from './usage.js';
export {
  routeTable,
  DEFAULT_TIMEOUT_MS,
  DEFAULT_IDLE_TIMEOUT_MS,
  type Route,
  type RouteTable,
} from './route-table.js';
export { probeProvider, type ProbeResult } from './probe.js';
export type { TrustSource } from './upstream.js';
