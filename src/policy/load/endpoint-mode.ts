/**
 * Whether the proxy inspects an endpoint's requests (L7) or only passes bytes (L4), and the rules
 * that keep that choice coherent.
 *
 * Decision (stricter than OpenShell, which inspects only when `protocol` is set and otherwise
 * ignores `rules`/`access`): an endpoint is inspected when its protocol is `rest` or `websocket`,
 * or when it has no protocol but has `rules`, `deny_rules`, or an `access` preset narrower than
 * `full`. Carapace never lets through more than the file says; `access: full` with no protocol
 * is plain L4 passthrough, which allows exactly the same requests without decrypting them.
 */
import type { PolicyIssue, PolicyPath } from '../diagnostics.js';
import type { Endpoint } from '../schema/schema.js';

export type InspectedProtocol = 'rest' | 'websocket';

export interface EndpointMode {
  /** True when every HTTP request is judged by decideRequest (the proxy terminates TLS). */
  inspect: boolean;
  /** The protocol the proxy speaks: `rest`/`websocket` when inspecting, `tcp` for passthrough. */
  protocol: InspectedProtocol | 'tcp';
}

const UNSUPPORTED = new Set(['graphql', 'sql', 'json-rpc', 'mcp']);

export function endpointMode(ep: Endpoint): EndpointMode {
  if (ep.protocol === 'rest' || ep.protocol === 'websocket') return { inspect: true, protocol: ep.protocol };
  if (ep.protocol === 'tcp') return { inspect: false, protocol: 'tcp' };
  const narrows =
    ep.rules !== undefined ||
    ep.deny_rules !== undefined ||
    (ep.access !== undefined && ep.access !== 'full');
  return narrows ? { inspect: true, protocol: 'rest' } : { inspect: false, protocol: 'tcp' };
}

export function checkEndpointInspection(ep: Endpoint, path: PolicyPath): PolicyIssue[] {
  const issues: PolicyIssue[] = [];
  if (ep.protocol !== undefined && UNSUPPORTED.has(ep.protocol)) {
    issues.push({
      path: [...path, 'protocol'],
      message: `protocol "${ep.protocol}" is not inspected by Carapace yet; use "rest" (HTTP method/path rules) or "tcp"`,
    });
    return issues;
  }
  if (ep.access !== undefined && ep.rules !== undefined) {
    issues.push({
      path: [...path, 'rules'],
      at: 'key',
      message:
        '"access" and "rules" cannot both be set; keep "access" for a preset or "rules" for exact requests',
    });
  }
  if (ep.rules !== undefined && ep.rules.length === 0) {
    issues.push({
      path: [...path, 'rules'],
      message:
        '"rules" is an empty list, which would allow no request; add allow rules, use "access: full", or remove it',
    });
  }
  if (ep.deny_rules !== undefined && ep.deny_rules.length === 0) {
    issues.push({
      path: [...path, 'deny_rules'],
      message: '"deny_rules" is an empty list; remove it or add deny rules',
    });
  }
  if (ep.protocol === 'tcp') {
    for (const key of ['access', 'rules', 'deny_rules', 'credentials'] as const) {
      if (ep[key] !== undefined) {
        issues.push({
          path: [...path, key],
          at: 'key',
          message: `"protocol: tcp" passes bytes through uninspected, so "${key}" cannot apply; remove it or use "protocol: rest"`,
        });
      }
    }
    return issues;
  }
  if (
    (ep.protocol === 'rest' || ep.protocol === 'websocket') &&
    ep.rules === undefined &&
    ep.access === undefined
  ) {
    issues.push({
      path: [...path, 'protocol'],
      message: `"protocol: ${ep.protocol}" needs "rules" or "access" to say which requests are allowed (e.g. access: read-only)`,
    });
  }
  if (ep.deny_rules !== undefined && ep.rules === undefined && ep.access === undefined) {
    issues.push({
      path: [...path, 'deny_rules'],
      at: 'key',
      message: '"deny_rules" need "rules" or "access" to define what is allowed before the denials',
    });
  }
  const mode = endpointMode(ep);
  if (mode.inspect && ep.tls === 'skip') {
    issues.push({
      path: [...path, 'tls'],
      message:
        '"tls: skip" stops the proxy from reading requests, so the rules of this endpoint cannot be enforced; remove it',
    });
  }
  if (!mode.inspect && ep.credentials !== undefined) {
    issues.push({
      path: [...path, 'credentials'],
      at: 'key',
      message:
        'credentials are added to inspected requests only; add "protocol: rest" (and rules or access) to this endpoint',
    });
  }
  return issues;
}
