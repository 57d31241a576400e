import { defineConfig } from 'vitest/config';

// Sandboxes are real processes: tests that start them take seconds, not milliseconds, and the
// machine is shared, so timeouts are generous and nothing asserts on elapsed time. The host is
// probed once per run (test/setup/probe-host.ts); tests skipped for a missing premise are listed
// at the end (test/setup/skip-summary.ts).
//
// Two projects: every test, and test/native once more against the ASan + UBSan build of the
// native programs (test/native/native-build.ts), so that CI runs the C code under the sanitizers.
export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    reporters: ['default', './test/setup/skip-summary.ts'],
    projects: [
      {
        extends: true,
        test: {
          name: 'carapace',
          include: ['test/**/*.test.ts', 'src/**/*.test.ts'],
          globalSetup: ['test/setup/probe-host.ts'],
        },
      },
      {
        extends: true,
        test: {
          name: 'native (ASan+UBSan)',
          include: ['test/native/**/*.test.ts'],
          globalSetup: ['test/setup/probe-host.ts', 'test/setup/native-sanitize.ts'],
          env: { CARAPACE_NATIVE_BUILD: 'sanitize' },
        },
      },
    ],
  },
});
