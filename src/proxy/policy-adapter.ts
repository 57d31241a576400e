/**
 * Reads a compiled PolicyGeneration (src/policy) as the proxy's ProxyPolicy port.
 *
 * Mapping decisions: a connection may be admitted by several endpoints (several policy entries cover
 * one host); the proxy then treats it by their union, as the policy engine reports it — inspected if
 * any inspects, the union of allowed_ips and of bound credentials, WebSocket upgrades if any admitting
 * endpoint is `protocol: websocket`, and `tls: skip` only when the deciding endpoint says so (the policy
 * checks refuse endpoints that disagree on tls for one host). The host-local grant needs an endpoint
 * that names the host-local name exactly (a wildcard never does); TLS counts as declared when any
 * admitting endpoint declares it (the stricter reading for credentials). A request decision whose rules say deny
 * on an `enforcement: audit` endpoint comes back from the engine as allowed; here it is reported as
 * not allowed with enforcement `audit`, so the proxy records it as `audited` and forwards it.
 */
import type { PolicyGeneration } from '../policy/index.js';
import { isHostLocalName } from './net/address-guard.js';
import type {
  ConnectQuery,
  ConnectVerdict,
  ProxyPolicy,
  RequestQuery,
  RequestVerdict,
} from './policy-port.js';

export function proxyPolicyOf(generation: PolicyGeneration): ProxyPolicy {
  return {
    decideConnect(q: ConnectQuery): ConnectVerdict {
      const d = generation.decideConnect({
        host: q.host,
        port: q.port,
        binary: q.binary,
        ancestors: q.ancestors,
      });
      const websocket = d.endpoints.some((e) => e.protocol === 'websocket');
      return {
        allowed: d.allowed,
        policy: d.policy ?? undefined,
        reason: d.reason,
        enforcement: d.enforcement,
        endpoint: d.allowed
          ? {
              inspect: d.inspect,
              protocol: websocket ? 'websocket' : d.inspect ? 'rest' : 'tcp',
              tls: d.endpoint?.tls === 'skip' ? 'skip' : 'terminate',
              allowedIps: d.allowedIps,
              credentials: d.credentials,
              hostLocal: d.endpoints.some((e) => e.host !== null && isHostLocalName(e.host)),
              tlsDeclared: d.endpoints.some((e) => e.tlsDeclared),
            }
          : undefined,
      };
    },
    decideRequest(q: RequestQuery): RequestVerdict {
      const d = generation.decideRequest({
        host: q.host,
        port: q.port,
        binary: q.binary,
        ancestors: q.ancestors,
        method: q.method,
        path: q.path,
        query: q.query,
      });
      return {
        allowed: d.verdict === 'allow',
        policy: d.policy ?? undefined,
        reason: d.reason,
        enforcement: d.enforcement,
      };
    },
  };
}
