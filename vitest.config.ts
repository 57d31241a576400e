import { defineConfig } from 'vitest/config';

// Sandboxes are real processes: tests that start them take seconds, not milliseconds, and the
// machine is shared, so timeouts are generous and nothing asserts on elapsed time. The host is
// probed once per run (test/setup/probe-host.ts); tests skipped for a missing premise are listed
// at the end (test/setup/skip-summary.ts).
// Tests start the CLI with this process's Node (test/helpers/cli.ts): it must be Carapace's own, which
// `npm test` and `npx vitest` find first on PATH (node_modules/.bin/node, from npm ci).
if (Number(process.versions.node.split('.')[0]) < 24) {
  throw new Error(
    `vitest is running on Node.js ${process.version} (${process.execPath}); Carapace runs on Node.js 24: use npm test or npx vitest`,
  );
}

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
