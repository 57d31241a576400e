/**
 * `--env NAME=VALUE` pairs, read the same way by `carapace run` (in its process or through a
 * gateway) and `sandbox create`/`exec`; a module of its own so the run's fastest path loads little.
 */
import { ENV_NAME, RunInputError } from '../../runtime/sandbox-spec-from-policy.js';

export function parseEnv(pairs: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of pairs) {
    const eq = pair.indexOf('=');
    const name = eq < 0 ? pair : pair.slice(0, eq);
    if (eq < 0 || !ENV_NAME.test(name)) {
      throw new RunInputError(
        `--env "${pair}": expected NAME=VALUE with NAME made of letters, digits and '_'`,
      );
    }
    out[name] = pair.slice(eq + 1);
  }
  return out;
}
