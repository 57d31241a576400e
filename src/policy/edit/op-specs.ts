/**
 * The compact specs of the incremental operations, as OpenShell's `policy update` writes them:
 * `host:port[:access[:protocol[:enforcement]]]`, `host:port`, and `host:port:METHOD:path`.
 * (An IPv6 literal cannot be written in these specs; edit the file for those.)
 */
import { policyErrorAt } from '../diagnostics.js';
import { parseHostPattern } from '../patterns/host-pattern.js';
import { methodProblem } from '../load/http-methods.js';
import type { Access, Enforcement } from '../schema/schema.js';

export interface EndpointSpec {
  host: string;
  port: number;
  access?: Access;
  protocol?: 'rest' | 'websocket' | 'tcp';
  enforcement?: Enforcement;
}

export interface HostPortSpec {
  host: string;
  port: number;
}

export interface RuleSpec extends HostPortSpec {
  method: string;
  path: string;
}

function parseHost(flag: string, spec: string, raw: string): string {
  const host = raw.trim();
  if (host === '') throw policyErrorAt(flag, `"${spec}" has an empty host`);
  const parsed = parseHostPattern(host);
  if ('error' in parsed) throw policyErrorAt(flag, parsed.error);
  return host;
}

function parsePort(flag: string, spec: string, raw: string | undefined): number {
  const text = (raw ?? '').trim();
  if (!/^\d+$/.test(text)) throw policyErrorAt(flag, `"${spec}": the port must be a number, got "${text}"`);
  const port = Number(text);
  if (port < 1 || port > 65535)
    throw policyErrorAt(flag, `"${spec}": port ${port} is out of range; a TCP port is 1–65535`);
  return port;
}

function oneOf<T extends string>(
  flag: string,
  spec: string,
  what: string,
  value: string,
  allowed: readonly T[],
): T {
  if ((allowed as readonly string[]).includes(value)) return value as T;
  throw policyErrorAt(flag, `"${spec}": ${what} must be one of ${allowed.join(', ')}, got "${value}"`);
}

export function parseEndpointSpec(spec: string, flag = '--add-endpoint'): EndpointSpec {
  const parts = spec.split(':');
  if (parts.length < 2 || parts.length > 5) {
    throw policyErrorAt(flag, `expects host:port[:access[:protocol[:enforcement]]], got "${spec}"`);
  }
  const [host = '', port, access = '', protocol = '', enforcement = ''] = parts.map((p) => p.trim());
  const out: EndpointSpec = { host: parseHost(flag, spec, host), port: parsePort(flag, spec, port) };
  if (parts.length === 3 && access === '')
    throw policyErrorAt(flag, `"${spec}" ends with an empty access; remove the ":"`);
  if (access !== '')
    out.access = oneOf(flag, spec, 'access', access, ['read-only', 'read-write', 'full'] as const);
  if (protocol !== '')
    out.protocol = oneOf(flag, spec, 'protocol', protocol, ['rest', 'websocket', 'tcp'] as const);
  if (enforcement !== '')
    out.enforcement = oneOf(flag, spec, 'enforcement', enforcement, ['enforce', 'audit'] as const);
  return out;
}

export function parseHostPortSpec(spec: string, flag = '--remove-endpoint'): HostPortSpec {
  const parts = spec.split(':');
  if (parts.length !== 2) throw policyErrorAt(flag, `expects host:port, got "${spec}"`);
  return { host: parseHost(flag, spec, parts[0] ?? ''), port: parsePort(flag, spec, parts[1]) };
}

export function parseRuleSpec(spec: string, flag = '--add-rule'): RuleSpec {
  const parts = spec.split(':');
  if (parts.length < 4) throw policyErrorAt(flag, `expects host:port:METHOD:path, got "${spec}"`);
  const method = (parts[2] ?? '').trim().toUpperCase();
  const path = parts.slice(3).join(':').trim();
  const problem = methodProblem(method);
  if (problem !== null) throw policyErrorAt(flag, `"${spec}": ${problem}`);
  if (!(path.startsWith('/') || path === '**'))
    throw policyErrorAt(flag, `"${spec}": the path must start with "/"`);
  return { host: parseHost(flag, spec, parts[0] ?? ''), port: parsePort(flag, spec, parts[1]), method, path };
}
