/**
 * The second step of `npm run build`: bundles the `carapace` command into dist/cli/ with esbuild,
 * and makes the bundle's entry, dist/cli/carapace.js, the launcher that `./install.sh` puts on
 * PATH. Runs from dist/scripts/ with Carapace's own Node (`npm run build` finds it first on PATH).
 *
 * The launcher's first line names, by absolute path, the Node.js that `npm ci` installed for
 * Carapace (the node-linux-<arch> package, pinned in package-lock.json): the kernel starts that
 * Node directly, whatever `node` the system has or lacks (scripts/launcher-head.ts).
 *
 * Why a bundle (docs/benchmarks.md has the numbers): one file per lazily loaded part of the CLI
 * instead of one per module, and with Node's compile cache (src/cli/main.ts) a few milliseconds
 * off every start. The sources' `import()`s stay `import()`s: `carapace run` loads neither the
 * policy engine, commander nor the proxy unless it needs them. The `tsc` output in dist/src/ stays
 * what the benchmarks import.
 */
import { chmodSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';
import { carapaceNodePath } from './carapace-node.js';
import { launcherHead } from './launcher-head.js';

/** The repository, from dist/scripts/. */
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const OUT = join(ROOT, 'dist', 'cli');
const LAUNCHER = join(OUT, 'carapace.js');

async function main(): Promise<void> {
  const node = carapaceNodePath(ROOT);
  // Chunks are named by their content: without this, every build would leave the last one's
  // behind, and their entries in the compile cache (made again, private, by src/cli/main.ts).
  rmSync(OUT, { recursive: true, force: true });
  rmSync(join(ROOT, 'dist', 'compile-cache'), { recursive: true, force: true });
  await esbuild.build({
    absWorkingDir: ROOT,
    entryPoints: { carapace: 'src/cli/main.ts' },
    outdir: OUT,
    chunkNames: 'chunks/[name]-[hash]',
    bundle: true,
    splitting: true,
    format: 'esm',
    platform: 'node',
    target: `node${process.versions.node.split('.')[0]}`,
    sourcemap: 'linked',
    // commander is CommonJS: its `require`s of Node's modules need one, which ESM does not define.
    banner: { js: "const require = process.getBuiltinModule('node:module').createRequire(import.meta.url);" },
    logLevel: 'warning',
    // ink imports React's devtools only when DEV=true (a debugging aid, not a dependency of ours).
    external: ['react-devtools-core'],
  });
  const body = readFileSync(LAUNCHER, 'utf8').replace(/^#!.*\n/, '');
  writeFileSync(LAUNCHER, launcherHead(node) + body);
  chmodSync(LAUNCHER, 0o755);
}

main().catch((err: unknown) => {
  process.stderr.write(`build-cli: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
