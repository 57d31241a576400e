/**
 * A policy update as the API takes it: the operations of `carapace policy apply-ops`, written as
 * its command line writes them (specs like `host:port:access`, presets by name or as a file's
 * text), turned into the policy engine's operations. A spec or preset that is wrong is a
 * POLICY_INVALID error with every diagnostic.
 */
import type { PolicyOperation, Preset } from '../../policy/index.js';
import { ApiError } from '../api/errors.js';

type Engine = typeof import('../../policy/index.js');

/** An operation as the API takes it: the specs `carapace policy apply-ops` takes on its command line. */
export type WireOperation =
  | { op: 'add-endpoint'; endpoint: string; binaries?: string[] | undefined; policyKey?: string | undefined }
  | { op: 'remove-endpoint'; endpoint: string; policyKey?: string | undefined }
  | { op: 'add-rule' | 'remove-rule'; kind: 'allow' | 'deny'; rule: string; policyKey?: string | undefined }
  | {
      op: 'add-preset' | 'remove-preset';
      /** A built-in preset by name, or a preset file's text. */
      preset: { name: string } | { text: string; file?: string | undefined };
      replace?: boolean | undefined;
      force?: boolean | undefined;
    };

/** The engine's operation for one of the API's; throws PolicyError for a bad spec or preset. */
export function operationOf(w: WireOperation, engine: Engine): PolicyOperation {
  const key = (k: string | undefined) => (k === undefined ? {} : { policyKey: k });
  switch (w.op) {
    case 'add-endpoint':
      return {
        op: 'add-endpoint',
        endpoint: engine.parseEndpointSpec(w.endpoint),
        binaries: w.binaries ?? [],
        ...key(w.policyKey),
      };
    case 'remove-endpoint':
      return { op: 'remove-endpoint', endpoint: engine.parseHostPortSpec(w.endpoint), ...key(w.policyKey) };
    case 'add-rule':
    case 'remove-rule': {
      const flag = `--${w.op === 'add-rule' ? 'add' : 'remove'}-${w.kind === 'deny' ? 'deny-' : ''}rule`;
      return { op: w.op, kind: w.kind, rule: engine.parseRuleSpec(w.rule, flag), ...key(w.policyKey) };
    }
    case 'add-preset':
    case 'remove-preset': {
      const preset = presetOf(w.preset, engine);
      return w.op === 'add-preset'
        ? { op: 'add-preset', preset, onConflict: w.replace === true ? 'replace' : 'error' }
        : { op: 'remove-preset', preset, force: w.force === true };
    }
  }
}

function presetOf(p: { name: string } | { text: string; file?: string | undefined }, engine: Engine): Preset {
  if ('name' in p) return engine.loadBuiltinPreset(p.name);
  const r = engine.parsePreset(p.text, p.file ?? 'preset.yaml');
  if (!r.ok) throw new engine.PolicyError(r.diagnostics);
  return r.preset;
}

/** A policy problem found while making the change: POLICY_INVALID with every diagnostic. */
export function asApiError(err: unknown, engine: Engine): unknown {
  if (!(err instanceof engine.PolicyError)) return err;
  const [first] = err.diagnostics;
  return new ApiError(
    'POLICY_INVALID',
    first
      ? engine.formatDiagnostic(first) +
          (err.diagnostics.length > 1 ? ` (and ${err.diagnostics.length - 1} more)` : '')
      : err.message,
    err.diagnostics,
  );
}
