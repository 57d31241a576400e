import { defineConfig } from 'vitest/config';

// Sandboxes are real processes: tests that start them take seconds, not milliseconds, and the
// machine is shared, so timeouts are generous and nothing asserts on elapsed time. The host is
// probed once per run (test/setup/probe-host.ts); tests skipped for a missing premise are listed
// at the end (test/setup/skip-summary.ts).
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts', 'src/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    globalSetup: ['test/setup/probe-host.ts'],
    reporters: ['default', './test/setup/skip-summary.ts'],
  },
});
