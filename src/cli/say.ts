/**
 * One line of the CLI's own on stderr, `carapace: …`, escaped (src/policy/printable.ts): such a
 * line quotes text that is not ours (a path, a name a blueprint or a sandbox chose, a gateway's
 * reason), which may carry control and bidi characters. A stream of a tool's own output (a
 * sandbox's, `sandbox logs`) is not a line of ours and is not passed here.
 */
import { printable } from '../policy/printable.js';

export function say(line: string): void {
  process.stderr.write(`carapace: ${printable(line)}\n`);
}
