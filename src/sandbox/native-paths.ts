/** Where the package's own files are, whether we run from `src/` (tests) or `dist/src/` (installed). */
import { accessSync, constants, existsSync, statSync } from 'node:fs';
import { delimiter, dirname, isAbsolute, join } from 'node:path';
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

let cachedBwrap: string | undefined;

/**
 * bwrap's absolute path, found in the PATH Carapace itself runs with. bwrap is started with an
 * empty environment (launch.ts: the agent's variables are not bwrap's), and a spawn with no PATH
 * searches only /usr/bin:/bin; looking it up here finds a bwrap in /usr/local/bin as doctor does.
 */
export function bwrapBinary(): string {
  if (cachedBwrap) return cachedBwrap;
  for (const dir of (process.env.PATH ?? '/usr/bin:/bin').split(delimiter)) {
    if (!isAbsolute(dir)) continue; // a relative entry would depend on the working directory
    const candidate = join(dir, 'bwrap');
    try {
      accessSync(candidate, constants.X_OK);
      if (!statSync(candidate).isFile()) continue;
      cachedBwrap = candidate;
      return candidate;
    } catch {
      // not here
    }
  }
  return 'bwrap'; // spawn then fails with ENOENT, which launch.ts reports
}

/**
 * The root-only launcher that binds fds at aliases in a mount namespace of its own before it runs
 * bwrap as the sandbox's uid (see bind-sources.ts; built by `npm run build`).
 */
export function nativeLauncher(): string {
  return join(packageRoot(), 'native', 'carapace-launch');
}

/** Binds a running sandbox's masks again after the host replaced a masked file (mask-guard.ts). */
export function nativeMasker(): string {
  return join(packageRoot(), 'native', 'carapace-mask');
}

/** Sends a control request with a file descriptor, which Node cannot (control-log.ts). */
export function nativeFdSender(): string {
  return join(packageRoot(), 'native', 'carapace-sendfd');
}
