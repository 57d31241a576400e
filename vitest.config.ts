import { defineConfig } from 'vitest/config';

// Sandboxes are real processes: tests that start them take seconds, not milliseconds, and the
// machine is shared, so timeouts are generous and nothing asserts on elapsed time. The host is
// probed once per run (test/setup/probe-host.ts); tests skipped for a missing premise are listed
// at the end (test/setup/skip-summary.ts).
//
// Two projects: every test, and test/native once more against the ASan + UBSan build of the
// native programs (test/native/native-build.ts), so that CI runs the C code under the sanitizers.
//
// Tests start the CLI with this process's Node (test/helpers/cli.ts): it must be Carapace's own, which
// `npm test` and `npx vitest` find first on PATH (node_modules/.bin/node, from npm ci).
if (Number(process.versions.node.split('.')[0]) < 24) {
  throw new Error(
    `vitest is running on Node.js ${process.version} (${process.execPath}); Carapace runs on Node.js 24: use npm test or npx vitest`,
  );
}

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
          setupFiles: ['test/setup/clean-homes.ts'],
        },
      },
      {
        extends: true,
        test: {
          name: 'native (ASan+UBSan)',
          include: ['test/native/**/*.test.ts'],
          globalSetup: ['test/setup/probe-host.ts', 'test/setup/native-sanitize.ts'],
          setupFiles: ['test/setup/clean-homes.ts'],
          env: { CARAPACE_NATIVE_BUILD: 'sanitize' },
        },
      },
    ],
  },
});
