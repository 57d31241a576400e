/**
 * What happens when a sandbox's agent ends by itself: its restart policy decides (`never`,
 * `on-failure`: a non-zero status, `always`), with exponential backoff between restarts, and a
 * crash loop ends in `failed` instead of restarting forever.
 *
 * A run counts as quick when it lasted less than `stableMs`: quick runs in a row double the wait
 * before the next start (from `minBackoffMs` up to `maxBackoffMs`), and more than `crashLoopRuns`
 * of them is a crash loop. One run that lasts `stableMs` starts the count again.
 *
 * A restart whose start fails (its workspace, a mount or its policy unusable for now) is a run
 * too: a quick one that failed, so it is tried again after its backoff, and a start that keeps
 * failing ends in the same crash loop.
 */
import type { RestartPolicy } from '../store/sandbox-store.js';

export interface RestartSettings {
  minBackoffMs: number;
  maxBackoffMs: number;
  /** Quick runs in a row that make a crash loop. */
  crashLoopRuns: number;
  /** A run at least this long is not quick. */
  stableMs: number;
}

export const DEFAULT_RESTART: RestartSettings = {
  minBackoffMs: 1_000,
  maxBackoffMs: 5 * 60_000,
  crashLoopRuns: 5,
  stableMs: 10 * 60_000,
};

export interface Run {
  startedAt: number;
  exitedAt: number;
  /** Its agent's exit status; null when it did not start (`error` says why). */
  exitCode: number | null;
  error?: string | undefined;
}

export type RestartStep =
  { kind: 'stay-stopped' } | { kind: 'restart'; delayMs: number } | { kind: 'crash-loop'; reason: string };

/** The step after the last of `runs` (oldest first) ended by itself. */
export function nextStep(
  policy: RestartPolicy,
  runs: readonly Run[],
  s: RestartSettings = DEFAULT_RESTART,
): RestartStep {
  const last = runs[runs.length - 1];
  if (!last || policy === 'never' || (policy === 'on-failure' && last.exitCode === 0))
    return { kind: 'stay-stopped' };
  let quick = 0;
  for (let i = runs.length - 1; i >= 0 && runs[i]!.exitedAt - runs[i]!.startedAt < s.stableMs; i--) quick++;
  if (quick > s.crashLoopRuns) {
    return {
      kind: 'crash-loop',
      reason:
        `crash loop: ${quick} runs in a row ended within ${Math.round(s.stableMs / 1000)}s of their start ` +
        `(last ${last.exitCode === null ? `start failed: ${last.error}` : `status ${last.exitCode}`}); ` +
        'see carapace sandbox logs, then sandbox start',
    };
  }
  return {
    kind: 'restart',
    delayMs: quick === 0 ? s.minBackoffMs : Math.min(s.maxBackoffMs, s.minBackoffMs * 2 ** (quick - 1)),
  };
}
