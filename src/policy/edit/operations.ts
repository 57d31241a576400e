/**
 * Incremental operations on a policy file: add/remove an endpoint, an allow or deny rule, a preset.
 *
 * Each operation edits the parsed YAML document (never the text), so comments and the layout of
 * everything it does not touch survive. The edited document is then re-validated as a whole —
 * an operation can never leave an invalid policy behind — and compared with the original for a
 * readable diff.
 */
import { isMap, type Document, type YAMLMap } from 'yaml';
import { PolicyError, policyErrorAt } from '../diagnostics.js';
import { diffPolicies, formatChanges, type PolicyChange } from './diff.js';
import { normalizeHost } from '../patterns/host-pattern.js';
import { parsePolicy } from '../load/loader.js';
import type { EndpointSpec, HostPortSpec, RuleSpec } from './op-specs.js';
import { planPresetMerge, planPresetRemoval } from './presets.js';
import { ACCESS_METHODS } from '../compile/request-rules.js';
import type { Endpoint, NetworkPolicy, Policy, Preset } from '../schema/schema.js';
import { changedSections, type SectionChanges } from './sections.js';

export type PolicyOperation =
  | { op: 'add-endpoint'; endpoint: EndpointSpec; binaries?: string[]; policyKey?: string }
  | { op: 'remove-endpoint'; endpoint: HostPortSpec; policyKey?: string }
  | { op: 'add-rule'; kind: 'allow' | 'deny'; rule: RuleSpec; policyKey?: string }
  | { op: 'remove-rule'; kind: 'allow' | 'deny'; rule: RuleSpec; policyKey?: string }
  | { op: 'add-preset'; preset: Preset; onConflict?: 'error' | 'replace' }
  | { op: 'remove-preset'; preset: Preset; force?: boolean };

export interface PolicyEditResult {
  /** The new, validated policy. */
  policy: Policy;
  /** The edited YAML document. */
  document: Document;
  /** The new file text, comments kept. */
  text: string;
  changes: PolicyChange[];
  /** One readable line per change (`+ path: value`, `- …`, `~ … → …`). */
  diff: string[];
  sections: SectionChanges;
}

/** OpenShell's name for a generated entry: `allow_api_github_com_443`. */
export function generatedPolicyKey(host: string, port: number): string {
  return `allow_${host.replace(/[.-]/g, '_').replace(/[^A-Za-z0-9_]/g, '')}_${port}`;
}

type Policies = Record<string, NetworkPolicy>;

function policiesOf(doc: Document): Policies {
  const data = doc.toJS() as Policy;
  return data.network_policies ?? {};
}

function ensurePolicies(doc: Document): void {
  const node = doc.get('network_policies', true);
  if (node === undefined || node === null || (node as { value?: unknown }).value === null) {
    doc.set('network_policies', doc.createNode({}));
  } else if (isMap(node) && node.flow === true && node.items.length === 0) {
    // `network_policies: {}` grows into a block map, not one long flow line.
    node.flow = false;
  }
}

function endpointCovers(ep: Endpoint, target: HostPortSpec): boolean {
  if (ep.host === undefined || normalizeHost(ep.host) !== normalizeHost(target.host)) return false;
  return ep.port === target.port || (ep.ports ?? []).includes(target.port);
}

/** Every (key, index) whose endpoint is exactly host:port, in the given entry or all of them. */
function findEndpoints(
  policies: Policies,
  target: HostPortSpec,
  key?: string,
): { key: string; index: number }[] {
  const out: { key: string; index: number }[] = [];
  for (const [k, np] of Object.entries(policies)) {
    if (key !== undefined && k !== key) continue;
    np.endpoints.forEach((ep, index) => {
      if (endpointCovers(ep, target)) out.push({ key: k, index });
    });
  }
  return out;
}

function describe(target: HostPortSpec): string {
  return `${target.host}:${target.port}`;
}

function addEndpoint(doc: Document, op: Extract<PolicyOperation, { op: 'add-endpoint' }>): void {
  const spec = op.endpoint;
  const policies = policiesOf(doc);
  const key = op.policyKey ?? generatedPolicyKey(spec.host, spec.port);
  const endpoint: Endpoint = { host: spec.host, port: spec.port };
  if (spec.protocol !== undefined) endpoint.protocol = spec.protocol;
  if (spec.enforcement !== undefined) endpoint.enforcement = spec.enforcement;
  if (spec.access !== undefined) endpoint.access = spec.access;
  const binaries = [...new Set(op.binaries ?? [])];
  const existing = policies[key];
  ensurePolicies(doc);
  if (existing === undefined) {
    const entry: NetworkPolicy = { name: key, endpoints: [endpoint] };
    if (binaries.length > 0) entry.binaries = binaries.map((path) => ({ path }));
    doc.setIn(['network_policies', key], doc.createNode(entry));
    return;
  }
  if (findEndpoints(policies, spec, key).length > 0) {
    throw policyErrorAt('--add-endpoint', `${describe(spec)} is already in network policy "${key}"`);
  }
  if (binaries.length > 0 && existing.binaries === undefined) {
    throw policyErrorAt(
      '--add-endpoint',
      `network policy "${key}" allows any program; listing binaries would restrict its other endpoints too — add the endpoint under another policy key`,
    );
  }
  doc.addIn(['network_policies', key, 'endpoints'], doc.createNode(endpoint));
  const known = new Set((existing.binaries ?? []).map((b) => b.path));
  for (const path of binaries) {
    if (!known.has(path)) doc.addIn(['network_policies', key, 'binaries'], doc.createNode({ path }));
  }
}

function removeEndpoint(doc: Document, op: Extract<PolicyOperation, { op: 'remove-endpoint' }>): void {
  const policies = policiesOf(doc);
  const found = findEndpoints(policies, op.endpoint, op.policyKey);
  if (found.length === 0)
    throw policyErrorAt('--remove-endpoint', `no endpoint ${describe(op.endpoint)} in the policy`);
  // Highest index first, so earlier indices stay valid while deleting.
  for (const { key, index } of found.sort((a, b) => b.index - a.index)) {
    const ep = policies[key]?.endpoints[index];
    if (ep?.ports !== undefined && ep.ports.length > 1) {
      const i = ep.ports.indexOf(op.endpoint.port);
      doc.deleteIn(['network_policies', key, 'endpoints', index, 'ports', i]);
      continue;
    }
    doc.deleteIn(['network_policies', key, 'endpoints', index]);
  }
  for (const key of new Set(found.map((f) => f.key))) {
    const left = policiesOf(doc)[key]?.endpoints.length ?? 0;
    if (left === 0) doc.deleteIn(['network_policies', key]);
  }
}

function sameRule(m: { method: string; path: string }, r: RuleSpec): boolean {
  return m.method.toUpperCase() === r.method && m.path === r.path;
}

function targetEndpoint(doc: Document, op: { rule: RuleSpec; policyKey?: string | undefined }, flag: string) {
  const policies = policiesOf(doc);
  const found = findEndpoints(policies, op.rule, op.policyKey);
  if (found.length === 0)
    throw policyErrorAt(flag, `no endpoint ${describe(op.rule)} in the policy; add it first`);
  if (found.length > 1) {
    const keys = found.map((f) => `"${f.key}"`).join(', ');
    throw policyErrorAt(
      flag,
      `${describe(op.rule)} is in several network policies (${keys}); name one with --policy-key`,
    );
  }
  const { key, index } = found[0] as { key: string; index: number };
  const ep = policies[key]?.endpoints[index] as Endpoint;
  return { ep, path: ['network_policies', key, 'endpoints', index] };
}

function addRule(doc: Document, op: Extract<PolicyOperation, { op: 'add-rule' }>): void {
  const flag = op.kind === 'allow' ? '--add-rule' : '--add-deny-rule';
  const { ep, path } = targetEndpoint(doc, op, flag);
  if (ep.protocol === 'tcp' || (ep.rules === undefined && ep.access === undefined)) {
    throw policyErrorAt(
      flag,
      `${describe(op.rule)} is not inspected (every request passes); give it "protocol: rest" and rules or access first`,
    );
  }
  const { method, path: p } = op.rule;
  if (op.kind === 'deny') {
    if ((ep.deny_rules ?? []).some((d) => sameRule(d, op.rule))) return;
    if (ep.deny_rules === undefined)
      doc.setIn([...path, 'deny_rules'], doc.createNode([{ method, path: p }]));
    else doc.addIn([...path, 'deny_rules'], doc.createNode({ method, path: p }));
    return;
  }
  if ((ep.rules ?? []).some((r) => sameRule(r.allow, op.rule))) return;
  if (ep.access !== undefined) {
    // `access` and `rules` are exclusive: spell the preset out as rules, then add the new one.
    const methods = ACCESS_METHODS[ep.access] ?? ['*'];
    const rules = methods.map((m) => ({ allow: { method: m, path: '/**' } }));
    (doc.getIn(path, true) as YAMLMap).delete('access');
    doc.setIn([...path, 'rules'], doc.createNode([...rules, { allow: { method, path: p } }]));
    return;
  }
  doc.addIn([...path, 'rules'], doc.createNode({ allow: { method, path: p } }));
}

function removeRule(doc: Document, op: Extract<PolicyOperation, { op: 'remove-rule' }>): void {
  const flag = op.kind === 'allow' ? '--remove-rule' : '--remove-deny-rule';
  const { ep, path } = targetEndpoint(doc, op, flag);
  const list = op.kind === 'allow' ? (ep.rules ?? []).map((r) => r.allow) : (ep.deny_rules ?? []);
  const index = list.findIndex((m) => sameRule(m, op.rule));
  const what = `${op.kind} rule ${op.rule.method} ${op.rule.path}`;
  if (index < 0) throw policyErrorAt(flag, `${describe(op.rule)} has no ${what}`);
  const field = op.kind === 'allow' ? 'rules' : 'deny_rules';
  if (list.length === 1) {
    if (op.kind === 'allow') {
      throw policyErrorAt(
        flag,
        `${what} is the last allow rule of ${describe(op.rule)}; remove the endpoint instead`,
      );
    }
    (doc.getIn(path, true) as YAMLMap).delete(field);
    return;
  }
  doc.deleteIn([...path, field, index]);
}

function applyPreset(
  doc: Document,
  op: Extract<PolicyOperation, { op: 'add-preset' | 'remove-preset' }>,
): void {
  const policies = policiesOf(doc);
  if (op.op === 'add-preset') {
    ensurePolicies(doc);
    for (const { key, action } of planPresetMerge(policies, op.preset, {
      onConflict: op.onConflict ?? 'error',
    })) {
      if (action === 'add' || action === 'replace') {
        doc.setIn(['network_policies', key], doc.createNode(op.preset.network_policies[key]));
      }
    }
    return;
  }
  for (const { key, action } of planPresetRemoval(policies, op.preset, op.force ?? false)) {
    if (action === 'remove') doc.deleteIn(['network_policies', key]);
  }
}

function applyOne(doc: Document, op: PolicyOperation): void {
  switch (op.op) {
    case 'add-endpoint':
      return addEndpoint(doc, op);
    case 'remove-endpoint':
      return removeEndpoint(doc, op);
    case 'add-rule':
      return addRule(doc, op);
    case 'remove-rule':
      return removeRule(doc, op);
    case 'add-preset':
    case 'remove-preset':
      return applyPreset(doc, op);
  }
}

/**
 * Applies the operations in order to the policy in `text` and returns the result; throws
 * PolicyError when the input is invalid, an operation cannot apply, or the result would be invalid.
 */
export function applyPolicyOperations(
  text: string,
  file: string,
  ops: readonly PolicyOperation[],
): PolicyEditResult {
  const before = parsePolicy(text, file);
  if (!before.ok) throw new PolicyError(before.diagnostics);
  const document = before.document.clone();
  for (const op of ops) applyOne(document, op);
  const newText = document.toString({ lineWidth: 0 });
  const after = parsePolicy(newText, `${file} (after the changes)`);
  if (!after.ok) throw new PolicyError(after.diagnostics);
  const changes = diffPolicies(before.policy, after.policy);
  return {
    policy: after.policy,
    document: after.document,
    text: newText,
    changes,
    diff: formatChanges(changes),
    sections: changedSections(before.policy, after.policy),
  };
}
