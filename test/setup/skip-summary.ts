/**
 * A vitest reporter that lists, at the end of the run, every test skipped with a reason (see
 * test/helpers/premises.ts), so that what a host could not test is in the run's output.
 */
import type { Reporter, TestModule } from 'vitest/node';

export default class SkipSummary implements Reporter {
  onTestRunEnd(modules: readonly TestModule[]): void {
    const skipped: string[] = [];
    for (const m of modules) {
      for (const t of m.children.allTests()) {
        const r = t.result();
        if (r.state === 'skipped' && r.note)
          skipped.push(`  ${m.moduleId.replace(/^.*\/test\//, 'test/')} › ${t.fullName}\n      ${r.note}\n`);
      }
    }
    if (skipped.length === 0) return;
    process.stdout.write(
      `\n${skipped.length} test(s) skipped for a missing host premise:\n${skipped.join('')}`,
    );
  }
}
