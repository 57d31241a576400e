/**
 * The host side of agent images, read where the CLI may read the environment: Carapace's own
 * Node.js (reused when a blueprint pins the same), the npm that installs packages, and the
 * run settings of the install sandbox.
 */
import { existsSync, readFileSync, realpathSync } from 'node:fs';
import { delimiter, dirname, join } from 'node:path';
import type { ImageHost, OwnRuntime } from '../../blueprint/image.js';
import { packageRoot } from '../../sandbox/native-paths.js';
import { UsageError } from '../errors.js';
import { say } from '../say.js';

/** The architecture Carapace's Node runs on, as agent images name it. */
export function ownArch(): OwnRuntime['arch'] {
  return process.arch === 'arm64' ? 'arm64' : 'x64';
}

function ownRuntime(): OwnRuntime {
  const arch = ownArch();
  const dir = join(packageRoot(), 'node_modules', `node-linux-${arch}`);
  let integrity: string | null = null;
  try {
    const lock = JSON.parse(
      readFileSync(join(packageRoot(), 'node_modules', '.package-lock.json'), 'utf8'),
    ) as {
      packages: Record<string, { integrity?: string }>;
    };
    integrity = lock.packages[`node_modules/node-linux-${arch}`]?.integrity ?? null;
  } catch {
    // no lockfile: the runtime is installed from the registry instead of reused
  }
  return {
    version: process.versions.node,
    arch,
    integrity: existsSync(join(dir, 'bin', 'node')) ? integrity : null,
    dir,
  };
}

/** npm's package directory: from `npm` on PATH (bin/npm-cli.js inside). */
function findNpm(env: NodeJS.ProcessEnv): string {
  for (const d of (env.PATH ?? '').split(delimiter)) {
    const candidate = join(d, 'npm');
    if (d === '' || !existsSync(candidate)) continue;
    try {
      const cli = realpathSync(candidate); // …/npm/bin/npm-cli.js
      const dir = dirname(dirname(cli));
      if (existsSync(join(dir, 'bin', 'npm-cli.js'))) return dir;
    } catch {
      continue;
    }
  }
  throw new UsageError('npm is not on PATH: agent images are installed with npm (apt-get install npm)', 1);
}

export async function imageHost(o: { upstreamCa?: string | undefined; quiet?: boolean }): Promise<ImageHost> {
  const { runOneOff } = await import('../../runtime/one-off-run.js');
  const { runHost } = await import('../run/run-options.js');
  if (o.upstreamCa !== undefined && !existsSync(o.upstreamCa))
    throw new UsageError(`--upstream-ca ${o.upstreamCa}: cannot read that file`);
  const mib = (b: number) => (b / 1024 / 1024).toFixed(1);
  let spinner: { text: string; start(): unknown; stop(): unknown; isSpinning: boolean } | null = null;
  if (process.stderr.isTTY && !o.quiet) {
    const { default: yoctoSpinner } = await import('yocto-spinner');
    spinner = yoctoSpinner({ text: 'downloading packages', stream: process.stderr });
  }
  return {
    run: runHost(),
    npmDir: findNpm(process.env),
    own: ownRuntime(),
    upstreamCaFile: o.upstreamCa ?? process.env.CARAPACE_UPSTREAM_CA,
    progress: (line) => {
      // Names and versions the blueprint chose, and paths: escaped (say.ts).
      if (!o.quiet) say(line);
    },
    downloaded: (bytes) => {
      if (spinner === null) return;
      spinner.text = `downloading packages from the registry: ${mib(bytes)} MiB`;
      if (!spinner.isSpinning) spinner.start();
    },
    downloadsDone: (bytes) => {
      if (spinner?.isSpinning) spinner.stop();
      if (!o.quiet && bytes > 0) process.stderr.write(`carapace: downloaded ${mib(bytes)} MiB of packages\n`);
    },
    runOneOff,
  };
}
