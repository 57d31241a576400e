/**
 * Tests state their premises. A test that needs something of the host (root, Landlock ABI 6, the
 * i386 entry point, …) calls `requires(ctx, …)` first: where the premise is missing the test is
 * skipped with the probe's reason, which the skip summary at the end of the run lists.
 *
 * CARAPACE_MUST_WORK turns those skips into failures, like bubblewrap's BWRAP_MUST_WORK: `1` (or
 * `all`) for every premise, or a comma-separated list of premise names. .ci/run sets it to what
 * CI's host is known to have, so a premise lost there fails loudly instead of skipping quietly.
 */
import { inject, type TestContext } from 'vitest';
import { PREMISE_NAMES, type PremiseName, type PremiseResult } from './host-probe.js';

export type { PremiseName };

function mustWork(name: PremiseName): boolean {
  const v = process.env.CARAPACE_MUST_WORK?.trim();
  if (!v || v === '0') return false;
  if (v === '1' || v === 'all') return true;
  return v.split(',').some((n) => n.trim() === name);
}

/** The probe's answer for one premise (probed once per run by test/setup/probe-host.ts). */
export function premise(name: PremiseName): PremiseResult {
  const all = inject('hostPremises');
  const p = all?.[name];
  if (!p) throw new Error(`unknown premise "${name}" (known: ${PREMISE_NAMES.join(', ')})`);
  return p;
}

/** True when every named premise holds on this host. For describe-level gating with skipIf. */
export function holds(...names: PremiseName[]): boolean {
  return names.every((n) => premise(n).holds);
}

/**
 * Skips the running test, with the reason, unless every premise holds; under CARAPACE_MUST_WORK a
 * missing premise fails the test instead.
 */
export function requires(ctx: TestContext, ...names: PremiseName[]): void {
  for (const name of names) {
    const p = premise(name);
    if (p.holds) continue;
    const reason = `needs ${name}: ${p.detail}`;
    if (mustWork(name)) throw new Error(`${reason} (CARAPACE_MUST_WORK requires it on this host)`);
    ctx.skip(reason);
  }
}
