/**
 * Per test file (a vitest setup file): once the file's own hooks are done (its gateways stopped,
 * its sandboxes ended; vitest runs after-hooks in reverse order, so this one comes last), the
 * CARAPACE_HOME directories it made are removed.
 */
import { afterAll } from 'vitest';
import { removeFreshHomes } from '../helpers/cli.js';

// Removing a home can take long: an onboarded agent's image is ~200 MB of files, and CI's machine
// is loaded (it took over a minute there once). This is clean-up, not something a test measures.
afterAll(() => removeFreshHomes(), 600_000);
