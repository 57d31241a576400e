/**
 * `-o, --output FORMAT`, the same for every command that has it: each command names the formats it
 * can print, the first being what it prints without `-o`. A format it cannot print is refused
 * while commander reads the command line, before the command's action runs: a typo such as
 * `carapace rules approve 7 -o yaml` must not approve and then print something a script cannot
 * read, and `carapace sandbox ls -o yaml` must not print the table as if yaml were a table.
 */
import type { Command } from 'commander';
import { UsageError } from './errors.js';

/** `value` if it is one of `formats`; else the one line that says which are. */
export function parseOutputFormat<F extends string>(value: string, formats: readonly [F, ...F[]]): F {
  if ((formats as readonly string[]).includes(value)) return value as F;
  throw new UsageError(
    `--output ${value} is not one of ${formats.join(', ')} (leave -o out for ${formats[0]})`,
  );
}

/**
 * Adds `-o, --output <format>` to `cmd`. The action's `output` is then always one of `formats`:
 * the first when `-o` is not given. `what` says what the non-default formats print.
 */
export function outputOption<F extends string>(
  cmd: Command,
  formats: readonly [F, ...F[]],
  what = 'json for scripts',
): Command {
  return cmd.option(
    '-o, --output <format>',
    `${formats.join(' | ')} (${what})`,
    (value: string) => parseOutputFormat(value, formats),
    formats[0],
  );
}
