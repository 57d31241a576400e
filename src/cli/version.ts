/** Carapace's version and the Node.js it runs on: `--version` and `carapace doctor` print them. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../sandbox/native-paths.js';

export function carapaceVersion(): string {
  const pkg = JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version: string };
  return pkg.version;
}

/** The Node.js major version Carapace is built and tested on (package.json `engines`). */
export const NODE_MAJOR = 24;
