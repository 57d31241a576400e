/**
 * npm, run inside a Carapace sandbox, installing a blueprint's packages (or a Node.js runtime)
 * into a staging directory, and the checks of what it installed (image.ts publishes the result).
 *
 * Install scripts of the packages are code from the registry, so npm runs as an agent would: no
 * host files but the system directories read-only, the staging directory as its workspace, and a
 * network that reaches registry.npmjs.org:443 and nothing else. The registry is allowed by host
 * and port, not by the npm preset's GET rules: the sandbox holds no credential, so reaching the
 * registry's write methods gains an install script nothing, and terminating TLS for every tarball
 * would only cost time (docs/blueprints.md).
 *
 * What npm installed is then checked against the blueprint: every pinned package at its version
 * with the blueprint's integrity (sha512), as npm's lockfile records what it downloaded and
 * verified.
 */
import { randomBytes } from 'node:crypto';
import { copyFileSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { BlueprintError } from './errors.js';
import type { ImageHost } from './image.js';
import type { BlueprintPackage } from './schema.js';
import { rmTree } from './store.js';

/** Where npm and the Node.js that runs it appear inside the install sandbox. */
const NPM_MOUNT = '/opt/carapace/npm';
const NODE_MOUNT = '/opt/carapace/node';
/** npm's log directory, in the staging directory (read by the host, removed before publishing). */
const LOGS = '.npm-logs';

/** The install sandbox's policy: the system read-only, its workspace, the npm registry. */
const INSTALL_POLICY = `version: 1
filesystem_policy:
  include_workdir: false
  read_only: [/usr, /lib, /lib64, /bin, /sbin, /etc]
  read_write: [/sandbox, /tmp]
landlock: { compatibility: best_effort }
process: { run_as_user: sandbox, run_as_group: sandbox }
limits: { pids: 4096, open_files: 8192 }
network_policies:
  npm_registry:
    name: npm_registry
    endpoints:
      - { host: registry.npmjs.org, port: 443 }
`;

/**
 * npm install of `packages` into a new staging directory under `parent`, in a sandbox; checked.
 * Returns the staging directory (the caller publishes it). npm's own output (its warnings, the
 * install scripts' notices, "added N packages") is not the caller's: npm runs silent and its
 * complete log is kept at `o.log`; a failure quotes npm's error lines and names that file.
 */
export async function installPackages(
  parent: string,
  packages: BlueprintPackage[],
  nodeDir: string,
  host: ImageHost,
  o: { stateDir: string; log: string },
): Promise<string> {
  const staging = join(parent, `.staging-${process.pid}-${randomBytes(4).toString('hex')}`);
  mkdirSync(staging, { mode: 0o755 });
  const policyFile = join(o.stateDir, `.image-policy-${randomBytes(4).toString('hex')}.yaml`);
  try {
    writeFileSync(policyFile, INSTALL_POLICY, { mode: 0o644 });
    // The whole cache: a download grows in its tmp/ before it moves into content-v2/.
    const watch = watchDownloads(join(staging, '.npm-cache'), host);
    const code = await host
      .runOneOff(
        {
          policy: policyFile,
          workspace: staging,
          env: {
            PATH: `${NODE_MOUNT}/bin:/usr/local/bin:/usr/bin:/bin`,
            // The proxy terminates TLS; npm trusts only its cafile, so point it at the bundle with
            // the sandbox's CA (the global npmrc of the host may name another).
            npm_config_cafile: '/.carapace/ca-bundle.pem',
            npm_config_userconfig: '/tmp/npmrc',
            npm_config_update_notifier: 'false',
          },
          mounts: [
            { host: host.npmDir, path: NPM_MOUNT, readOnly: true },
            { host: nodeDir, path: NODE_MOUNT, readOnly: true },
          ],
          bestEffortLimits: true,
          command: [
            `${NODE_MOUNT}/bin/node`,
            `${NPM_MOUNT}/bin/npm-cli.js`,
            'install',
            '--prefix',
            '/sandbox',
            '--save-exact',
            '--no-audit',
            '--no-fund',
            '--fetch-retries=2',
            // In the staging directory (removed before the image is published), so that its
            // growth is the download's progress; npm's own progress display is off.
            '--cache',
            '/sandbox/.npm-cache',
            '--progress=false',
            // Silent on the terminal (the caller's output is its own lines); everything npm
            // says, at every level, is in its log file, kept beside the image. What still
            // reaches the terminal (the sandbox's stdio is the caller's, as in any `carapace
            // run`) is not escaped: it is the install's own output stream, as a run's command's
            // or `sandbox logs`'s is, not a line of Carapace's quoting it.
            '--loglevel=silent',
            '--logs-dir',
            `/sandbox/${LOGS}`,
            ...packages.map((p) => `${p.name}@${p.version}`),
          ],
          network: {
            hosts: {},
            allowLocal: [],
            upstreamCaFile: host.upstreamCaFile,
            credentials: new Map(),
          },
        },
        host.run,
      )
      .finally(() => watch.stop());
    rmTree(join(staging, '.npm-cache'));
    const log = keepLog(join(staging, LOGS), o.log);
    if (code !== 0)
      throw new BlueprintError(
        'IMAGE_INSTALL_FAILED',
        `npm install of ${packages.map((p) => `${p.name}@${p.version}`).join(', ')} failed (exit ${code}); nothing was kept` +
          (log !== null ? `: ${npmErrors(log)} (npm's log: ${o.log})` : ''),
      );
    checkInstalled(staging, packages);
    return staging;
  } catch (err) {
    rmTree(staging);
    throw err;
  } finally {
    rmTree(policyFile);
  }
}

/** Every pinned package is in npm's lockfile at its version, with the blueprint's integrity. */
function checkInstalled(dir: string, packages: BlueprintPackage[]): void {
  let lock: { packages?: Record<string, { version?: string; integrity?: string }> };
  try {
    lock = JSON.parse(readFileSync(join(dir, 'node_modules', '.package-lock.json'), 'utf8')) as typeof lock;
  } catch {
    throw new BlueprintError(
      'IMAGE_INSTALL_FAILED',
      'npm left no lockfile (node_modules/.package-lock.json); nothing was kept',
    );
  }
  for (const p of packages) {
    const got = lock.packages?.[`node_modules/${p.name}`];
    if (got?.version !== p.version || got.integrity !== p.integrity)
      throw new BlueprintError(
        'IMAGE_INSTALL_FAILED',
        `${p.name}: the registry served ${got?.version ?? 'nothing'} with integrity ${got?.integrity ?? 'none'}, the blueprint pins ${p.version} with ${p.integrity}; refusing it, nothing was kept`,
      );
  }
}

/** Polls the size of npm's content cache (what it downloaded) without blocking the event loop. */
function watchDownloads(dir: string, host: ImageHost): { stop(): Promise<void> } {
  let bytes = 0;
  let busy = false;
  const measure = async (): Promise<void> => {
    if (busy) return;
    busy = true;
    try {
      bytes = await treeBytes(dir);
      host.downloaded?.(bytes);
    } finally {
      busy = false;
    }
  };
  const timer = setInterval(() => void measure(), 500);
  return {
    stop: async () => {
      clearInterval(timer);
      await measure();
      host.downloadsDone?.(bytes);
    },
  };
}

async function treeBytes(dir: string): Promise<number> {
  let total = 0;
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return 0;
  }
  for (const name of names) {
    try {
      const st = await lstat(join(dir, name));
      total += st.isDirectory() ? await treeBytes(join(dir, name)) : st.size;
    } catch {
      // being written or moved by npm
    }
  }
  return total;
}

/** npm's debug log of this run, copied to `dest`; its text, or null when npm wrote none. */
function keepLog(dir: string, dest: string): string | null {
  try {
    const [name] = readdirSync(dir).filter((n) => n.endsWith('.log'));
    if (name === undefined) return null;
    copyFileSync(join(dir, name), dest);
    return readFileSync(dest, 'utf8');
  } catch {
    return null;
  } finally {
    rmTree(dir);
  }
}

/** npm's `error` lines of a log, as one line ("A complete log …" names a path inside the sandbox). */
export function npmErrors(log: string): string {
  const lines = log
    .split('\n')
    .map((l) => /^\d+ error (.*)$/.exec(l)?.[1]?.trim())
    .filter((l): l is string => l !== undefined && l !== '' && !l.startsWith('A complete log'));
  const text = [...new Set(lines)].join('; ');
  return text === '' ? 'npm logged no error' : text.length > 400 ? `${text.slice(0, 400)}…` : text;
}
