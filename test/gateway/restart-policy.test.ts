/** The restart policy's decisions (src/gateway/sandboxes/restart-policy.ts), on their own. */
import { describe, expect, it } from 'vitest';
import { nextStep, type Run } from '../../src/gateway/sandboxes/restart-policy.js';

const s = { minBackoffMs: 1000, maxBackoffMs: 8000, crashLoopRuns: 5, stableMs: 60_000 };
const quick = (code: number, at = 0): Run => ({ startedAt: at, exitedAt: at + 100, exitCode: code });

describe('restart policy', () => {
  it('never restarts under never, nor a clean exit under on-failure', () => {
    expect(nextStep('never', [quick(1)], s)).toEqual({ kind: 'stay-stopped' });
    expect(nextStep('on-failure', [quick(0)], s)).toEqual({ kind: 'stay-stopped' });
    expect(nextStep('on-failure', [quick(3)], s)).toEqual({ kind: 'restart', delayMs: 1000 });
    expect(nextStep('always', [quick(0)], s)).toEqual({ kind: 'restart', delayMs: 1000 });
  });

  it('doubles the wait with each quick run in a row, up to the cap, then calls it a crash loop', () => {
    const runs: Run[] = [];
    const delays: number[] = [];
    for (let i = 0; i < 5; i++) {
      runs.push(quick(1, i * 1000));
      const step = nextStep('always', runs, s);
      expect(step.kind).toBe('restart');
      delays.push((step as { delayMs: number }).delayMs);
    }
    expect(delays).toEqual([1000, 2000, 4000, 8000, 8000]);
    runs.push(quick(1, 9000));
    const loop = nextStep('always', runs, s);
    expect(loop).toMatchObject({ kind: 'crash-loop' });
    expect((loop as { reason: string }).reason).toMatch(/^crash loop: 6 runs in a row .*last status 1/);
  });

  it('starts counting again after a run that lasted', () => {
    const runs: Run[] = [quick(1), quick(1), quick(1), { startedAt: 0, exitedAt: 120_000, exitCode: 1 }];
    expect(nextStep('always', runs, s)).toEqual({ kind: 'restart', delayMs: 1000 });
  });

  it('counts a start that failed as a failure: restarted under on-failure, and part of a crash loop', () => {
    const failedStart: Run = { startedAt: 0, exitedAt: 50, exitCode: null, error: 'the workspace is gone' };
    expect(nextStep('on-failure', [failedStart], s)).toEqual({ kind: 'restart', delayMs: 1000 });
    expect(nextStep('never', [failedStart], s)).toEqual({ kind: 'stay-stopped' });
    const loop = nextStep('always', [...Array<Run>(5).fill(quick(1)), failedStart], s);
    expect((loop as { reason: string }).reason).toMatch(
      /^crash loop: 6 runs in a row .*\(last start failed: the workspace is gone\)/,
    );
  });
});
