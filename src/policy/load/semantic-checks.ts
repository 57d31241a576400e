/**
 * Checks that need more than one field, or knowledge the schema cannot express. Each returns
 * issues with the data path of the offending node, so the loader can point at it.
 *
 * These are security checks as much as hygiene: a relative or `..` path, `/` writable, a host
 * wildcard over a whole TLD, or an `allowed_ips` range that covers loopback would each quietly
 * grant much more than the author meant.
 */
import { posix } from 'node:path';
import type { PolicyIssue, PolicyPath } from '../diagnostics.js';
import { parseHostPattern } from '../patterns/host-pattern.js';
import { allowedIpProblem } from '../patterns/ip-ranges.js';
import { parseCpuMillis, parseMemoryBytes } from '../schema/limits.js';
import { checkEndpointInspection } from './endpoint-mode.js';
import { z } from 'zod';
import {
  AllowRuleSchema,
  BinarySchema,
  DenyRuleSchema,
  EndpointSchema,
  FilesystemPolicySchema,
  ProcessSchema,
  type Endpoint,
  type Policy,
} from '../schema/schema.js';
import { InferenceSchema, LimitsSchema, type Limits } from '../schema/schema-extensions.js';
import { checkInference } from './inference-checks.js';
import { methodProblem } from './http-methods.js';

const CREDENTIAL_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Runs every check on each section (and each network policy entry and endpoint) that has the
 * right shape, so that one run reports the semantic problems next to the schema problems of the
 * parts that are malformed.
 */
export function checkPolicyData(data: unknown): PolicyIssue[] {
  const issues: PolicyIssue[] = [];
  if (!isRecord(data)) return issues;
  const fs = FilesystemPolicySchema.optional().safeParse(data.filesystem_policy);
  if (fs.success && fs.data !== undefined) {
    fs.data.read_only?.forEach((p, i) =>
      checkFsPath(p, ['filesystem_policy', 'read_only', i], false, issues),
    );
    fs.data.read_write?.forEach((p, i) =>
      checkFsPath(p, ['filesystem_policy', 'read_write', i], true, issues),
    );
  }
  const proc = ProcessSchema.optional().safeParse(data.process);
  for (const field of ['run_as_user', 'run_as_group'] as const) {
    const value = proc.success ? proc.data?.[field] : undefined;
    if (value !== undefined) checkIdentity(value, ['process', field], issues);
  }
  if (isRecord(data.network_policies))
    checkNetworkPolicyData(data.network_policies, ['network_policies'], issues);
  const limits = LimitsSchema.optional().safeParse(data.limits);
  if (limits.success && limits.data !== undefined) checkLimits(limits.data, issues);
  const ports = z.array(z.number()).optional().safeParse(data.listen_ports);
  if (ports.success) checkUniquePorts(ports.data ?? [], ['listen_ports'], 'listen port', issues);
  const inference = InferenceSchema.optional().safeParse(data.inference);
  if (inference.success && inference.data !== undefined) checkInference(inference.data, issues);
  return issues;
}

export function checkNetworkPolicyData(
  policies: Record<string, unknown>,
  base: PolicyPath,
  issues: PolicyIssue[],
): void {
  for (const [key, entry] of Object.entries(policies)) {
    const path = [...base, key];
    if (key.trim() === '')
      issues.push({ path, at: 'key', message: 'a network policy key must not be empty' });
    if (!isRecord(entry)) continue;
    if (Array.isArray(entry.endpoints)) {
      entry.endpoints.forEach((raw, i) => {
        if (isRecord(raw)) checkEndpointData(raw, [...path, 'endpoints', i], issues);
      });
    }
    if (Array.isArray(entry.binaries)) {
      if (entry.binaries.length === 0) {
        issues.push({
          path: [...path, 'binaries'],
          message:
            '"binaries" is an empty list, which would allow no program; remove the key to allow any program, or list the programs',
        });
      }
      entry.binaries.forEach((raw, i) => {
        const b = BinarySchema.safeParse(raw);
        if (b.success) checkBinaryPath(b.data.path, [...path, 'binaries', i, 'path'], issues);
      });
    }
  }
}

function checkFsPath(p: string, path: PolicyPath, writable: boolean, issues: PolicyIssue[]): void {
  if (!p.startsWith('/')) {
    issues.push({
      path,
      message: `path "${p}" is relative; filesystem paths must be absolute (start with "/")`,
    });
    return;
  }
  if (p.split('/').includes('..')) {
    issues.push({ path, message: `path "${p}" contains "..": write the path it leads to instead` });
  }
  if (p.includes('\0')) issues.push({ path, message: 'path contains a NUL character' });
  if (writable && /^\/+$/.test(p)) {
    issues.push({
      path,
      message:
        '"/" cannot be read-write: it would let the agent change the whole filesystem; list the directories it needs',
    });
  }
}

function checkIdentity(value: string | number, path: PolicyPath, issues: PolicyIssue[]): void {
  const text = String(value);
  if (text === 'root' || text === '0') {
    issues.push({
      path,
      message: `"${text}" is root; the agent never runs as root — use "sandbox" or a non-zero id`,
    });
  } else if (/^\d+$/.test(text)) {
    if (Number(text) > 4294967294)
      issues.push({ path, message: `id ${text} is out of range (1–4294967294)` });
  } else if (!/^[a-z_][a-z0-9_-]{0,31}\$?$/.test(text)) {
    issues.push({ path, message: `"${text}" is not a valid user or group name` });
  }
}

function checkBinaryPath(p: string, path: PolicyPath, issues: PolicyIssue[]): void {
  if (!p.startsWith('/')) {
    issues.push({
      path,
      message: `binary "${p}" must be an absolute path or a glob starting with "/" (e.g. /usr/bin/git, /usr/bin/python3*)`,
    });
  } else if (p.split('/').includes('..')) {
    issues.push({ path, message: `binary "${p}" contains "..": write the path it leads to instead` });
  }
}

/** The string items of a list, with their index; other items are the schema's to report. */
function stringItems(value: unknown): [string, number][] {
  if (!Array.isArray(value)) return [];
  return value.flatMap((v, i): [string, number][] => (typeof v === 'string' ? [[v, i]] : []));
}

/**
 * Field checks run on whatever fields have the right type, so a bad port does not hide a bad
 * host; checks that combine fields run only when the whole endpoint has the right shape.
 */
function checkEndpointData(raw: Record<string, unknown>, path: PolicyPath, issues: PolicyIssue[]): void {
  if (typeof raw.host === 'string') {
    const parsed = parseHostPattern(raw.host);
    if ('error' in parsed) issues.push({ path: [...path, 'host'], message: parsed.error });
  }
  for (const [ip, i] of stringItems(raw.allowed_ips)) {
    const problem = allowedIpProblem(ip);
    if (problem !== null) issues.push({ path: [...path, 'allowed_ips', i], message: problem });
  }
  for (const [name, i] of stringItems(raw.credentials)) {
    if (!CREDENTIAL_NAME.test(name)) {
      issues.push({
        path: [...path, 'credentials', i],
        message: `credential name "${name}" must be letters, digits and "_" (e.g. GITHUB_TOKEN)`,
      });
    }
  }
  if (Array.isArray(raw.rules)) {
    raw.rules.forEach((r, i) => {
      const rule = AllowRuleSchema.safeParse(r);
      if (rule.success) checkHttpMatch(rule.data.allow, [...path, 'rules', i, 'allow'], issues);
    });
  }
  if (Array.isArray(raw.deny_rules)) {
    raw.deny_rules.forEach((r, i) => {
      const rule = DenyRuleSchema.safeParse(r);
      if (rule.success) checkHttpMatch(rule.data, [...path, 'deny_rules', i], issues);
    });
  }
  const parsed = EndpointSchema.safeParse(raw);
  if (parsed.success) checkEndpointShape(parsed.data, path, issues);
}

function checkEndpointShape(ep: Endpoint, path: PolicyPath, issues: PolicyIssue[]): void {
  if (ep.host === undefined) {
    if ((ep.allowed_ips ?? []).length === 0) {
      issues.push({
        path,
        message: 'endpoint has no "host"; add one (a host may be left out only with allowed_ips)',
      });
    } else if (ep.protocol === 'tcp') {
      issues.push({ path, message: 'a "protocol: tcp" endpoint needs a "host"' });
    }
  }
  if (ep.port === undefined && ep.ports === undefined) {
    issues.push({ path, message: 'endpoint has no "port"; add "port: 443" (or "ports: [80, 443]")' });
  }
  if (ep.port !== undefined && ep.ports !== undefined) {
    issues.push({
      path: [...path, 'ports'],
      at: 'key',
      message: 'endpoint has both "port" and "ports"; use one of them (put every port in "ports")',
    });
  }
  if (ep.ports !== undefined) checkUniquePorts(ep.ports, [...path, 'ports'], 'port', issues);
  issues.push(...checkEndpointInspection(ep, path));
}

function checkHttpMatch(
  m: { method: string; path: string; query?: Record<string, unknown> | undefined },
  path: PolicyPath,
  issues: PolicyIssue[],
): void {
  const problem = methodProblem(m.method);
  if (problem !== null) issues.push({ path: [...path, 'method'], message: problem });
  if (!(m.path.startsWith('/') || m.path === '**' || m.path.startsWith('**/'))) {
    issues.push({
      path: [...path, 'path'],
      message: `path "${m.path}" must start with "/" (e.g. "/repos/**"), or be "**"`,
    });
  }
  for (const key of Object.keys(m.query ?? {})) {
    if (key === '')
      issues.push({ path: [...path, 'query'], message: 'a query parameter name must not be empty' });
  }
}

function checkUniquePorts(ports: number[], path: PolicyPath, what: string, issues: PolicyIssue[]): void {
  const seen = new Set<number>();
  ports.forEach((p, i) => {
    if (seen.has(p)) issues.push({ path: [...path, i], message: `${what} ${p} is listed twice; remove one` });
    seen.add(p);
  });
}

function checkLimits(limits: Limits, issues: PolicyIssue[]): void {
  if (limits.memory !== undefined) {
    const r = parseMemoryBytes(limits.memory);
    if (typeof r !== 'number') issues.push({ path: ['limits', 'memory'], message: r.error });
  }
  if (limits.cpu !== undefined) {
    const r = parseCpuMillis(limits.cpu);
    if (typeof r !== 'number') issues.push({ path: ['limits', 'cpu'], message: r.error });
  }
}

/** Paths every sandbox has fresh (a procfs, a minimal /dev): nothing under them is the host's. */
const FRESH_ROOTS = ['/proc', '/dev'];
/** The workspace: Carapace makes what is listed under it before bwrap runs. */
const WORKSPACE = '/sandbox';

const normalFsPath = (p: string) => {
  const n = posix.normalize(p);
  return n.length > 1 && n.endsWith('/') ? n.slice(0, -1) : n;
};
const beneath = (p: string, root: string) => p !== root && p.startsWith(root === '/' ? '/' : root + '/');

/**
 * What keeps a valid policy from starting a sandbox as written: `carapace policy validate` prints
 * these as warnings (the file is valid, and may suit another host), `carapace run` fails on them
 * with exit 125 and bwrap's reason. A read_only path is the host's directory bound read-only, so
 * bwrap cannot make a mount point inside it for anything listed beneath: `/` itself (the sandbox
 * needs /sandbox and Carapace's /.carapace there), or a read_write path whose directory the host
 * may not have.
 */
export function startWarnings(policy: Policy): PolicyIssue[] {
  const fs = policy.filesystem_policy;
  if (!fs) return [];
  const issues: PolicyIssue[] = [];
  const readOnly = (fs.read_only ?? []).map(normalFsPath);
  const readWrite = (fs.read_write ?? []).map(normalFsPath);
  const rootAt = readOnly.indexOf('/');
  if (rootAt >= 0 && !readWrite.includes('/')) {
    issues.push({
      path: ['filesystem_policy', 'read_only', rootAt],
      message:
        '"/" read-only cannot start: it is the host\'s root bound read-only, where bwrap cannot ' +
        'make /sandbox or /.carapace; list the directories the agent needs (e.g. /usr, /lib, /etc)',
    });
    return issues;
  }
  const writable = new Set(readWrite);
  if (fs.include_workdir) writable.add(WORKSPACE);
  readWrite.forEach((rw, i) => {
    if (FRESH_ROOTS.some((f) => rw === f || beneath(rw, f))) return;
    const under = readOnly.find(
      (ro) =>
        beneath(rw, ro) &&
        !writable.has(ro) &&
        ro !== WORKSPACE &&
        !beneath(ro, WORKSPACE) &&
        !FRESH_ROOTS.some((f) => ro === f || beneath(ro, f)),
    );
    if (under === undefined) return;
    issues.push({
      path: ['filesystem_policy', 'read_write', i],
      message:
        `read_write "${rw}" lies under read_only "${under}", the host's directory bound read-only: ` +
        `bwrap cannot make a mount point there, so the sandbox starts only where the host has ` +
        `${rw}; list ${under}'s subdirectories instead, or move ${rw} elsewhere`,
    });
  });
  return issues;
}
