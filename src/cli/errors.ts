/** Maps the typed errors of the library to one line and an exit code. */

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

export function messageFor(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}

export function exitCodeFor(err: unknown): number {
  if (hasExitCode(err)) return err.exitCode;
  return 1;
}
