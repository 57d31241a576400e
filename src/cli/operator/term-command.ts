/**
 * `carapace term`: the operator's terminal view (src/cli/operator/term/app.ts). ink and React are loaded
 * only by this command (docs/dependencies.md).
 */
import type { Command } from 'commander';
import { UsageError } from '../errors.js';

export function registerTerm(program: Command): void {
  program
    .command('term')
    .description('a live terminal view: sandboxes, decisions, pending proposals (approve with a key)')
    .action(async () => {
      if (!process.stdout.isTTY || !process.stdin.isTTY)
        throw new UsageError('carapace term needs a terminal; for scripts, use carapace rules list -o json');
      const { runTerm } = await import('./term/app.js');
      await runTerm();
    });
}
