/**
 * Per test file (a vitest setup file): once the file's own hooks are done (its gateways stopped,
 * its sandboxes ended; vitest runs after-hooks in reverse order, so this one comes last), the
 * CARAPACE_HOME directories it made are removed.
 */
import { afterAll } from 'vitest';
import { removeFreshHomes } from '../helpers/cli.js';

afterAll(() => removeFreshHomes());
