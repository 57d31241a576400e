import { defineConfig } from 'vitest/config';

// Sandboxes are real processes: tests that start them take seconds, not milliseconds, and the
// machine is shared, so timeouts are generous and nothing asserts on elapsed time.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts', 'src/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
  },
});
