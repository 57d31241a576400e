/** Maps the typed errors of the library to one line and an exit code. */
import { printable } from '../policy/printable.js';

/** An error whose message is already the one line a user should read. */
export class UsageError extends Error {
  override name = 'UsageError';
  constructor(
    message: string,
    readonly exitCode = 2,
  ) {
    super(message);
  }
}

interface ErrorWithExitCode {
  exitCode: number;
}

function hasExitCode(err: unknown): err is ErrorWithExitCode {
  return typeof err === 'object' && err !== null && typeof (err as ErrorWithExitCode).exitCode === 'number';
}

/**
 * What the user reads of an error: its message, every line of it escaped. A message can carry
 * text a sandbox chose (a name it planted, a gateway's word about its sandbox), and whoever made
 * the message may not have escaped it; a message's own lines (a policy's diagnostics, one a line)
 * stay lines.
 */
export function messageFor(err: unknown): string {
  return printableLines(err instanceof Error ? err.message : String(err));
}

/** `text` with each of its lines made printable (src/policy/printable.ts), the newlines kept. */
export function printableLines(text: string): string {
  return text.split('\n').map(printable).join('\n');
}

export function exitCodeFor(err: unknown): number {
  if (hasExitCode(err)) return err.exitCode;
  return 1;
}
