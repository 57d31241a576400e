#!/usr/bin/env node
/**
 * The `carapace` command. Library code throws typed errors; this file alone turns them into one
 * line on stderr and an exit code.
 */
import type { Command } from 'commander';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../sandbox/native-paths.js';
import { exitCodeFor, messageFor } from './errors.js';

function version(): string {
  const pkg = JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version: string };
  return pkg.version;
}

/**
 * Each command's module, loaded only when that command is the one asked for: the policy engine
 * alone takes longer to load than a one-shot sandbox takes to run. Help, a bare `carapace` and an
 * unknown command load them all (the help lists them, the error suggests one).
 */
const COMMANDS: Record<string, () => Promise<(program: Command) => void>> = {
  doctor: async () => (await import('./doctor-command.js')).registerDoctor,
  policy: async () => (await import('./policy-command.js')).registerPolicy,
  run: async () => (await import('./run-command.js')).registerRun,
};

export async function buildProgram(argv: readonly string[] = []): Promise<Command> {
  const { Command } = await import('commander');
  const program = new Command('carapace')
    .description('A secure, sandboxed runtime for always-on AI agents.')
    .version(version(), '-V, --version', 'print the version')
    .showSuggestionAfterError(true)
    .enablePositionalOptions()
    .exitOverride()
    .configureOutput({ outputError: (str, write) => write(str.split('\n')[0] + '\n') });
  const asked = argv[2];
  const names = asked !== undefined && asked in COMMANDS ? [asked] : Object.keys(COMMANDS);
  for (const register of await Promise.all(names.map((n) => COMMANDS[n]!()))) register(program);
  return program;
}

async function main(argv: string[]): Promise<number> {
  try {
    if (argv[2] === 'run') {
      // A well-formed `carapace run [options] -- CMD` starts without loading commander.
      const run = await import('./run-command.js');
      const opts = run.parseRunArgs(argv.slice(3));
      if (opts !== null) return await run.runOneOff(opts);
    }
    const program = await buildProgram(argv);
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    const { CommanderError } = await import('commander');
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
