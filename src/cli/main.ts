#!/usr/bin/env node
/**
 * The `carapace` command. Library code throws typed errors; this file alone turns them into one
 * line on stderr and an exit code.
 */
import { Command, CommanderError } from 'commander';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../sandbox/native-paths.js';
import { registerDoctor } from './doctor-command.js';
import { registerPolicy } from './policy-command.js';
import { exitCodeFor, messageFor } from './errors.js';

function version(): string {
  const pkg = JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version: string };
  return pkg.version;
}

export function buildProgram(): Command {
  const program = new Command('carapace')
    .description('A secure, sandboxed runtime for always-on AI agents.')
    .version(version(), '-V, --version', 'print the version')
    .showSuggestionAfterError(true)
    .exitOverride()
    .configureOutput({ outputError: (str, write) => write(str.split('\n')[0] + '\n') });
  registerDoctor(program);
  registerPolicy(program);
  return program;
}

async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Commander already printed its one line (or the help/version text, with exit code 0).
      return err.exitCode;
    }
    process.stderr.write(`carapace: ${messageFor(err)}\n`);
    return exitCodeFor(err);
  }
}

main(process.argv).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`carapace: internal error: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(70);
  },
);
