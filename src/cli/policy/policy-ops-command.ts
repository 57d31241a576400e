/**
 * `carapace policy apply-ops FILE …`: incremental edits of a policy file.
 *
 * Operations run in a fixed order whatever the order of the flags: remove presets, add presets,
 * remove endpoints, add endpoints, add allow rules, add deny rules, remove allow rules, remove
 * deny rules. Without --write nothing is written: the diff shows what would change.
 */
import { Option, type Command } from 'commander';
import { chmodSync, existsSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, basename } from 'node:path';
import {
  applyPolicyOperations,
  loadBuiltinPreset,
  loadPresetFile,
  parseEndpointSpec,
  parseHostPortSpec,
  parseRuleSpec,
  readPolicyText,
  type PolicyOperation,
  type Preset,
} from '../../policy/index.js';
import { UsageError } from '../errors.js';
import { printable } from '../../policy/printable.js';
import { reportingPolicyErrors } from './policy-files.js';

/** The operation flags, as commander parses them (shared with `policy update`). */
export interface OpsOptions {
  addEndpoint?: string[];
  removeEndpoint?: string[];
  binary?: string[];
  policyKey?: string;
  addRule?: string[];
  addDenyRule?: string[];
  removeRule?: string[];
  removeDenyRule?: string[];
  addPreset?: string[];
  removePreset?: string[];
  replace?: boolean;
  force?: boolean;
  write?: boolean;
  print?: boolean;
}

/** A preset argument: a built-in name, or a path to a preset file. */
function presetFrom(arg: string): Preset {
  const looksLikeFile = arg.includes('/') || arg.endsWith('.yaml') || arg.endsWith('.yml');
  return looksLikeFile && existsSync(arg) ? loadPresetFile(arg) : loadBuiltinPreset(arg);
}

function operations(o: OpsOptions): PolicyOperation[] {
  const key = o.policyKey;
  const withKey = <T extends object>(op: T): T => (key === undefined ? op : { ...op, policyKey: key });
  if ((o.binary ?? []).length > 0 && (o.addEndpoint ?? []).length === 0) {
    throw new UsageError('--binary applies to --add-endpoint; add one, or drop --binary');
  }
  const ops: PolicyOperation[] = [
    ...(o.removePreset ?? []).map((p): PolicyOperation => ({
      op: 'remove-preset',
      preset: presetFrom(p),
      force: o.force === true,
    })),
    ...(o.addPreset ?? []).map((p): PolicyOperation => ({
      op: 'add-preset',
      preset: presetFrom(p),
      onConflict: o.replace === true ? 'replace' : 'error',
    })),
    ...(o.removeEndpoint ?? []).map((s): PolicyOperation =>
      withKey({ op: 'remove-endpoint', endpoint: parseHostPortSpec(s) }),
    ),
    ...(o.addEndpoint ?? []).map((s): PolicyOperation =>
      withKey({ op: 'add-endpoint', endpoint: parseEndpointSpec(s), binaries: o.binary ?? [] }),
    ),
    ...(o.addRule ?? []).map((s): PolicyOperation =>
      withKey({ op: 'add-rule', kind: 'allow', rule: parseRuleSpec(s) }),
    ),
    ...(o.addDenyRule ?? []).map((s): PolicyOperation =>
      withKey({ op: 'add-rule', kind: 'deny', rule: parseRuleSpec(s, '--add-deny-rule') }),
    ),
    ...(o.removeRule ?? []).map((s): PolicyOperation =>
      withKey({ op: 'remove-rule', kind: 'allow', rule: parseRuleSpec(s, '--remove-rule') }),
    ),
    ...(o.removeDenyRule ?? []).map((s): PolicyOperation =>
      withKey({ op: 'remove-rule', kind: 'deny', rule: parseRuleSpec(s, '--remove-deny-rule') }),
    ),
  ];
  if (ops.length === 0) {
    throw new UsageError(
      'apply-ops needs at least one operation (--add-endpoint, --add-preset, … see --help)',
    );
  }
  return ops;
}

/** Replaces the file atomically, keeping its mode: a crash leaves the old or the new file, never half. */
function writeAtomically(file: string, text: string): void {
  const tmp = join(dirname(file), `.${basename(file)}.${process.pid}.tmp`);
  writeFileSync(tmp, text, { mode: 0o600 });
  chmodSync(tmp, statSync(file).mode & 0o7777);
  renameSync(tmp, file);
}

function applyOps(file: string, o: OpsOptions): void {
  const ops = operations(o);
  const result = applyPolicyOperations(readPolicyText(file), file, ops);
  if (o.print === true) {
    process.stdout.write(result.text);
  } else {
    for (const line of result.diff) process.stdout.write(`${printable(line)}\n`);
    if (result.diff.length === 0) process.stdout.write('no changes\n');
    if (result.sections.static.length > 0) {
      process.stdout.write(
        `static sections changed (recreate the sandbox): ${result.sections.static.join(', ')}\n`,
      );
    }
  }
  if (o.write === true && result.changes.length > 0) {
    writeAtomically(file, result.text);
    process.stderr.write(`wrote ${printable(file)}\n`);
  } else if (o.write !== true && o.print !== true && result.changes.length > 0) {
    process.stderr.write('dry run: nothing written; add --write to save the changes\n');
  }
}

const repeatable = (v: string, prev: string[] | undefined): string[] => [...(prev ?? []), v];

function many(flags: string, description: string): Option {
  return new Option(flags, `${description} (repeatable)`).argParser(repeatable);
}

/** The operation flags (apply-ops and `policy update` take the same). */
export function addOperationOptions(command: Command): Command {
  return command
    .addOption(many('--add-endpoint <spec>', 'add host:port[:access[:protocol[:enforcement]]]'))
    .addOption(many('--binary <path>', 'restrict the added endpoints to this executable'))
    .option(
      '--policy-key <key>',
      'network policy entry to edit (default: allow_<host>_<port> for new endpoints)',
    )
    .addOption(many('--remove-endpoint <host:port>', 'remove an endpoint'))
    .addOption(many('--add-rule <host:port:METHOD:path>', 'add an allow rule'))
    .addOption(many('--add-deny-rule <host:port:METHOD:path>', 'add a deny rule'))
    .addOption(many('--remove-rule <host:port:METHOD:path>', 'remove an allow rule'))
    .addOption(many('--remove-deny-rule <host:port:METHOD:path>', 'remove a deny rule'))
    .addOption(many('--add-preset <name|file>', 'merge a preset'))
    .addOption(many('--remove-preset <name|file>', "remove a preset's network policies"))
    .option('--replace', 'when an added preset conflicts with an existing entry, replace the entry')
    .option('--force', 'remove preset entries even if they were edited since');
}

export function registerPolicyApplyOps(policy: Command): void {
  addOperationOptions(
    policy
      .command('apply-ops')
      .description('add or remove endpoints, rules and presets; shows the diff, writes with --write')
      .argument('<file>', 'policy file'),
  )
    .option('--print', 'print the resulting policy instead of the diff')
    .option('--write', 'write the result back to the file (comments are kept)')
    .action(reportingPolicyErrors(applyOps));
}
