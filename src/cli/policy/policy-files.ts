/** Shared by the `carapace policy` commands: loading files and reporting policy problems. */
import {
  formatDiagnostic,
  parsePolicyOrPreset,
  PolicyError,
  readPolicyText,
  type Diagnostic,
  type Policy,
  type Preset,
} from '../../policy/index.js';
import { printable } from '../../policy/printable.js';

/**
 * One problem of a policy on stderr, `file:line:col: message` (the form editors and CI annotate),
 * escaped (src/policy/printable.ts): the path and what the message quotes of the file (a key, a
 * value) may hold control and bidi characters. One line each, whatever they hold.
 */
export function printDiagnostic(d: Diagnostic): void {
  process.stderr.write(`${printable(formatDiagnostic(d))}\n`);
}

/** Runs a policy command; a PolicyError becomes its diagnostics on stderr and exit code 2. */
export function reportingPolicyErrors<A extends unknown[]>(fn: (...args: A) => void): (...args: A) => void {
  return (...args: A) => {
    try {
      fn(...args);
    } catch (err) {
      if (!(err instanceof PolicyError)) throw err;
      for (const d of err.diagnostics) printDiagnostic(d);
      process.exitCode = err.exitCode;
    }
  };
}

export type LoadedFile =
  | { kind: 'policy'; policy: Policy; warnings: Diagnostic[] }
  | { kind: 'preset'; preset: Preset; warnings: Diagnostic[] };

/** Reads and validates a policy or preset file; throws PolicyError with every problem. */
export function loadAny(file: string): LoadedFile {
  const r = parsePolicyOrPreset(readPolicyText(file), file);
  if (!r.ok) throw new PolicyError(r.diagnostics);
  return r.kind === 'policy'
    ? { kind: 'policy', policy: r.policy, warnings: r.warnings }
    : { kind: 'preset', preset: r.preset, warnings: r.warnings };
}
