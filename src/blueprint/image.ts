/**
 * Agent images: a blueprint's npm packages, installed once into `<state>/images/sha256-<hex>/`
 * (the blueprint's digest), read-only, and bound read-only into every sandbox made from it, so N
 * sandboxes of one blueprint share one copy on disk.
 *
 * The install runs npm **inside a Carapace sandbox** (a one-off run): install scripts of the
 * packages are code from the registry, so they get what any agent gets — no host files but the
 * system directories read-only, the staging directory as their workspace, and a network that
 * reaches registry.npmjs.org:443 and nothing else. The registry is allowed by host and port, not
 * by the npm preset's GET rules: the sandbox holds no credential, so reaching the registry's write
 * methods gains an install script nothing, and terminating TLS for every tarball would only cost
 * time (docs/blueprints.md).
 *
 * What npm installed is then checked against the blueprint: every pinned package at its version
 * with the blueprint's integrity (sha512), as npm's lockfile records what it downloaded and
 * verified. A mismatch, a failed npm, or an interruption leaves no image: the install fills a
 * staging directory, and only a complete, checked one is renamed to the digest's name (rename is
 * atomic; a staging directory left by a dead process is removed by the next install).
 *
 * The Node.js runtime is not copied when Carapace's own (the node-linux-<arch> package npm ci
 * installed for it) is the version and integrity the blueprint pins: that directory is bound
 * read-only instead. Another version is installed the same way, into `<state>/runtimes/`, shared
 * by every blueprint that pins it.
 */
import { randomBytes } from 'node:crypto';
import {
  existsSync,
  lchownSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  writeFileSync,
} from 'node:fs';
import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { RunHost, RunRequest } from '../runtime/one-off-run.js';
import { digestDirName } from './digest.js';
import { BlueprintError } from './errors.js';
import type { Blueprint, BlueprintPackage } from './schema.js';
import { makeReadOnly, rmTree, type VerifiedBlueprint } from './store.js';

/** Where an image and its runtime appear inside a sandbox. */
export const IMAGE_MOUNT = '/opt/carapace/agent';
export const RUNTIME_MOUNT = '/opt/carapace/node';
const NPM_MOUNT = '/opt/carapace/npm';
const IMAGE_RECORD = '.carapace-image.json';

export interface OwnRuntime {
  version: string;
  arch: 'x64' | 'arm64';
  /** npm integrity of the node-linux-<arch> package Carapace runs on (from its package-lock). */
  integrity: string | null;
  /** Its package directory (bin/node inside). */
  dir: string;
}

export interface ImageHost {
  run: RunHost;
  /** The npm package directory (bin/npm-cli.js inside), bound read-only into the install sandbox. */
  npmDir: string;
  own: OwnRuntime;
  /** Extra CAs the proxy trusts for the registry's TLS (an operator's mirror). */
  upstreamCaFile?: string | undefined;
  /** One line per step, for the person waiting. */
  progress(line: string): void;
  /** Bytes npm has downloaded so far in this install (every half second while it runs). */
  downloaded?(bytes: number): void;
  /** The install's downloads are over (the display of `downloaded` can end). */
  downloadsDone?(bytes: number): void;
  /** The one-off run (runtime/one-off-run.ts), passed in so that this module loads without it. */
  runOneOff(request: RunRequest, host: RunHost): Promise<number>;
}

export interface AgentImage {
  digest: string;
  /** Host directory of the packages (bound at IMAGE_MOUNT), null for a blueprint without any. */
  dir: string | null;
  /** Host directory of the runtime (bound at RUNTIME_MOUNT), null without one. */
  runtimeDir: string | null;
}

interface ImageRecord {
  digest: string;
  name: string;
  version: string;
  packages: BlueprintPackage[];
  runtimeDir: string | null;
}

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

export class ImageStore {
  readonly root: string;
  readonly runtimes: string;
  constructor(private readonly stateDir: string) {
    this.root = join(stateDir, 'images');
    this.runtimes = join(stateDir, 'runtimes');
  }

  path(digest: string): string {
    return join(this.root, digestDirName(digest));
  }

  has(digest: string): boolean {
    return existsSync(join(this.path(digest), IMAGE_RECORD));
  }

  /** The image of a verified blueprint, installed now unless it is already there (then instant). */
  async ensure(v: VerifiedBlueprint, host: ImageHost): Promise<AgentImage> {
    const b = v.blueprint;
    const runtimeDir = b.agent.runtime === undefined ? null : await this.ensureRuntime(b, host);
    if (b.agent.packages.length === 0) return { digest: v.digest, dir: null, runtimeDir };
    const target = this.path(v.digest);
    if (this.has(v.digest)) {
      this.checkRecord(target, v);
      return { digest: v.digest, dir: target, runtimeDir };
    }
    mkdirSync(this.root, { recursive: true, mode: 0o755 });
    this.sweepStaging(this.root);
    const list = b.agent.packages.map((p) => `${p.name}@${p.version}`).join(', ');
    host.progress(
      `installing ${list} for blueprint ${b.name} ${b.version} (in a sandbox that reaches only registry.npmjs.org)`,
    );
    const staging = await this.installPackages(this.root, b.agent.packages, runtimeDir!, host);
    const record: ImageRecord = {
      digest: v.digest,
      name: b.name,
      version: b.version,
      packages: b.agent.packages,
      runtimeDir,
    };
    writeFileSync(join(staging, IMAGE_RECORD), JSON.stringify(record, null, 2) + '\n');
    this.publish(staging, target);
    host.progress(`agent image ready: ${target}`);
    return { digest: v.digest, dir: target, runtimeDir };
  }

  /** Removes an image (a no-op when there is none). Sandboxes using it keep their open mount. */
  remove(digest: string): void {
    rmTree(this.path(digest));
  }

  private checkRecord(dir: string, v: VerifiedBlueprint): void {
    let record: ImageRecord;
    try {
      record = JSON.parse(readFileSync(join(dir, IMAGE_RECORD), 'utf8')) as ImageRecord;
    } catch {
      throw new BlueprintError(
        'IMAGE_INVALID',
        `${dir}: not an agent image; remove it (carapace blueprint remove ${v.blueprint.name})`,
      );
    }
    if (record.digest !== v.digest)
      throw new BlueprintError(
        'IMAGE_INVALID',
        `${dir}: the image of ${record.digest}, not ${v.digest}; remove it (carapace blueprint remove ${v.blueprint.name})`,
      );
  }

  private async ensureRuntime(b: Blueprint, host: ImageHost): Promise<string> {
    const node = b.agent.runtime!.node;
    const arch = host.own.arch;
    const integrity = node.integrity[arch];
    if (integrity === undefined)
      throw new BlueprintError(
        'IMAGE_INSTALL_FAILED',
        `blueprint ${b.name} pins no Node.js for ${arch} (agent.runtime.node.integrity.${arch})`,
      );
    if (node.version === host.own.version && integrity === host.own.integrity) return host.own.dir;
    const target = join(this.runtimes, `node-${node.version}-${arch}`);
    const record = join(target, IMAGE_RECORD);
    if (existsSync(record)) {
      const pinned = (JSON.parse(readFileSync(record, 'utf8')) as ImageRecord).packages[0];
      if (pinned?.integrity !== integrity)
        throw new BlueprintError(
          'IMAGE_INVALID',
          `${target}: a Node.js ${node.version} of another integrity than blueprint ${b.name} pins; remove it`,
        );
      return join(target, 'node_modules', `node-linux-${arch}`);
    }
    mkdirSync(this.runtimes, { recursive: true, mode: 0o755 });
    this.sweepStaging(this.runtimes);
    host.progress(`installing Node.js ${node.version} (node-linux-${arch}) for blueprint ${b.name}`);
    const pkg = { name: `node-linux-${arch}`, version: node.version, integrity };
    // Carapace's own Node runs npm here; the runtime being installed is only unpacked.
    const staging = await this.installPackages(this.runtimes, [pkg], host.own.dir, host);
    const rec: ImageRecord = {
      digest: '',
      name: pkg.name,
      version: pkg.version,
      packages: [pkg],
      runtimeDir: null,
    };
    writeFileSync(join(staging, IMAGE_RECORD), JSON.stringify(rec, null, 2) + '\n');
    this.publish(staging, target);
    return join(target, 'node_modules', `node-linux-${arch}`);
  }

  /** npm install of `packages` into a new staging directory under `parent`, in a sandbox; checked. */
  private async installPackages(
    parent: string,
    packages: BlueprintPackage[],
    nodeDir: string,
    host: ImageHost,
  ): Promise<string> {
    const staging = join(parent, `.staging-${process.pid}-${randomBytes(4).toString('hex')}`);
    mkdirSync(staging, { mode: 0o755 });
    const policyFile = join(this.stateDir, `.image-policy-${randomBytes(4).toString('hex')}.yaml`);
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
              PATH: `${RUNTIME_MOUNT}/bin:/usr/local/bin:/usr/bin:/bin`,
              // The proxy terminates TLS; npm trusts only its cafile, so point it at the bundle with
              // the sandbox's CA (the global npmrc of the host may name another).
              npm_config_cafile: '/.carapace/ca-bundle.pem',
              npm_config_userconfig: '/tmp/npmrc',
              npm_config_update_notifier: 'false',
            },
            mounts: [
              { host: host.npmDir, path: NPM_MOUNT, readOnly: true },
              { host: nodeDir, path: RUNTIME_MOUNT, readOnly: true },
            ],
            bestEffortLimits: true,
            command: [
              `${RUNTIME_MOUNT}/bin/node`,
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
              '--logs-dir',
              '/tmp/npm-logs',
              '--loglevel=warn',
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
      if (code !== 0)
        throw new BlueprintError(
          'IMAGE_INSTALL_FAILED',
          `npm install of ${packages.map((p) => `${p.name}@${p.version}`).join(', ')} failed (exit ${code}); nothing was kept — see npm's message above`,
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

  /** Owned by the caller (not the sandbox uid npm ran as, which could chmod it back), read-only, renamed into place. */
  private publish(staging: string, target: string): void {
    try {
      const uid = process.getuid?.() ?? 0;
      const gid = process.getgid?.() ?? 0;
      chownTree(staging, uid, gid);
      makeReadOnly(staging);
      try {
        renameSync(staging, target);
      } catch (err) {
        // Another install of the same digest finished first: its image is as good as ours.
        const code = (err as NodeJS.ErrnoException).code;
        if ((code !== 'ENOTEMPTY' && code !== 'EEXIST') || !existsSync(join(target, IMAGE_RECORD))) throw err;
        rmTree(staging);
      }
    } catch (err) {
      rmTree(staging);
      throw err;
    }
  }

  /** Staging directories of processes that no longer run (an interrupted install). */
  private sweepStaging(parent: string): void {
    for (const name of readdirSync(parent)) {
      const m = /^\.staging-(\d+)-/.exec(name);
      if (m === null) continue;
      const pid = Number(m[1]);
      let alive = true;
      try {
        process.kill(pid, 0);
      } catch (err) {
        alive = (err as NodeJS.ErrnoException).code === 'EPERM';
      }
      if (!alive || pid === process.pid) rmTree(join(parent, name));
    }
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

function chownTree(dir: string, uid: number, gid: number): void {
  if (process.getuid?.() !== 0) return; // a normal user's files are theirs already
  const walk = (path: string): void => {
    lchownSync(path, uid, gid);
    const st = lstatSync(path);
    if (st.isDirectory()) for (const name of readdirSync(path)) walk(join(path, name));
  };
  walk(dir);
}
