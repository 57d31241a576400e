/** Where the package's own files are, whether we run from `src/` (tests) or `dist/src/` (installed). */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

let cachedRoot: string | undefined;

export function packageRoot(): string {
  if (cachedRoot) return cachedRoot;
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const parent = dirname(dir);
    if (parent === dir) throw new Error('carapace: package.json not found above ' + import.meta.url);
    dir = parent;
  }
  cachedRoot = dir;
  return dir;
}

/** The C init that runs as PID 1 in every sandbox (built by `npm run build`). */
export function nativeBinary(): string {
  return process.env.CARAPACE_INIT ?? join(packageRoot(), 'native', 'carapace-init');
}

/** The pump the egress proxy hands bulk raw tunnels to (built by `npm run build`). */
export function nativeTunnelPump(): string {
  return join(packageRoot(), 'native', 'carapace-pump');
}

/**
 * The root-only launcher that binds fds at aliases in a mount namespace of its own before it runs
 * bwrap as the sandbox's uid (see bind-sources.ts; built by `npm run build`).
 */
export function nativeLauncher(): string {
  return join(packageRoot(), 'native', 'carapace-launch');
}
