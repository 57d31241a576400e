/**
 * Where Carapace's own Node.js is: the node-linux-<arch> package that `npm ci` installs (pinned,
 * with its integrity, in package-lock.json; docs/dependencies.md says why). The build names it in
 * the launcher's first line; the test suite and the benchmarks check that they run on it.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

/** The Node binary for this machine's architecture, under the repository `root`; throws if absent. */
export function carapaceNodePath(root: string): string {
  const pkg = `node-linux-${process.arch}`;
  let dir: string;
  try {
    dir = dirname(createRequire(join(root, 'package.json')).resolve(`${pkg}/package.json`));
  } catch {
    throw new Error(
      `${pkg} is not installed: run npm ci (Carapace's Node.js comes from npm, for x64 and arm64 Linux)`,
    );
  }
  const node = join(dir, 'bin', 'node');
  if (!existsSync(node)) throw new Error(`${node} is missing: run npm ci`);
  return node;
}
