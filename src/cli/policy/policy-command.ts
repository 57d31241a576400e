/**
 * `carapace policy …`: validate, explain, presets, show-preset, diff, apply-ops on files; and set,
 * update, get, history, rollback on the policy of a sandbox the gateway holds (policy-live-command.ts).
 *
 * Policy problems are printed one per line as `file:line:col: message` on stderr (the form editors
 * and CI annotate), and the command exits 2; every other error goes to main's handler.
 */
import type { Command } from 'commander';
import { readFileSync } from 'node:fs';
import {
  changedSections,
  diffPolicies,
  findPreset,
  formatChanges,
  listPresets,
  PolicyError,
} from '../../policy/index.js';
import { loadAny, printDiagnostic, reportingPolicyErrors, type LoadedFile } from './policy-files.js';
import { printable } from '../../policy/printable.js';
import { registerPolicyExplain } from './policy-explain.js';
import { registerPolicyLive } from './policy-live-command.js';
import { registerPolicyApplyOps } from './policy-ops-command.js';

function summary(loaded: LoadedFile): string {
  const policies =
    loaded.kind === 'policy' ? (loaded.policy.network_policies ?? {}) : loaded.preset.network_policies;
  const entries = Object.values(policies);
  const endpoints = entries.reduce((n, p) => n + p.endpoints.length, 0);
  const counts = `${entries.length} network ${entries.length === 1 ? 'policy' : 'policies'}, ${endpoints} endpoint${endpoints === 1 ? '' : 's'}`;
  return loaded.kind === 'policy' ? `policy, ${counts}` : `preset "${loaded.preset.preset.name}", ${counts}`;
}

function validate(files: string[]): void {
  let failed = false;
  for (const file of files) {
    try {
      const loaded = loadAny(file);
      process.stdout.write(`ok  ${printable(file)} (${printable(summary(loaded))})\n`);
      // Valid, but may not do what it says here (it cannot start a sandbox on this host, or a
      // rule names a method no server knows): said, not refused.
      for (const w of loaded.warnings) {
        printDiagnostic({ ...w, message: `warning: ${w.message}` });
      }
    } catch (err) {
      if (!(err instanceof PolicyError)) throw err;
      failed = true;
      for (const d of err.diagnostics) printDiagnostic(d);
    }
  }
  if (failed) process.exitCode = 2;
}

function presets(): void {
  const all = listPresets();
  const width = Math.max(...all.map((p) => p.name.length));
  for (const p of all) process.stdout.write(`${p.name.padEnd(width)}  ${p.description}\n`);
}

function showPreset(name: string): void {
  process.stdout.write(readFileSync(findPreset(name).file, 'utf8'));
}

function dataOf(loaded: LoadedFile): unknown {
  return loaded.kind === 'policy' ? loaded.policy : loaded.preset;
}

function diff(a: string, b: string): void {
  const left = loadAny(a);
  const right = loadAny(b);
  const lines = formatChanges(diffPolicies(dataOf(left), dataOf(right)));
  if (lines.length === 0) {
    process.stdout.write('no differences\n');
    return;
  }
  // A policy's values, shown by the one rule every view uses (printable.ts).
  for (const line of lines) process.stdout.write(`${printable(line)}\n`);
  if (left.kind === 'policy' && right.kind === 'policy') {
    const s = changedSections(left.policy, right.policy);
    if (s.static.length > 0) {
      process.stdout.write(
        `\nstatic sections changed (the sandbox must be recreated): ${s.static.join(', ')}\n`,
      );
    }
    if (s.dynamic.length > 0) {
      process.stdout.write(
        `${s.static.length > 0 ? '' : '\n'}hot-reloadable sections changed: ${s.dynamic.join(', ')}\n`,
      );
    }
  }
}

export function registerPolicy(program: Command): void {
  const policy = program
    .command('policy')
    .description(
      "validate, explain, compare and edit policy files (OpenShell format); change a sandbox's policy live",
    );

  policy
    .command('validate')
    .description('check policy or preset files; print every problem as file:line:col: message')
    .argument('<files...>', 'policy or preset YAML files')
    .action(reportingPolicyErrors(validate));

  registerPolicyExplain(policy);

  policy.command('presets').description('list the built-in presets').action(reportingPolicyErrors(presets));

  policy
    .command('show-preset')
    .description('print a built-in preset')
    .argument('<name>', 'preset name (see "carapace policy presets")')
    .action(reportingPolicyErrors(showPreset));

  policy
    .command('diff')
    .description('show what changes from policy A to policy B, and whether a running sandbox can take it')
    .argument('<a>', 'the policy before')
    .argument('<b>', 'the policy after')
    .action(reportingPolicyErrors(diff));

  registerPolicyApplyOps(policy);
  registerPolicyLive(policy);
}
