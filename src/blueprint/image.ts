/**
 * Agent images: a blueprint's npm packages, installed once into `<state>/images/image-<hex>/`,
 * read-only, and bound read-only into every sandbox made from it, so N sandboxes of one blueprint
 * share one copy on disk.
 *
 * An image is named by its id (imageId): sha256 over what is installed into it and nothing else:
 * the packages as pinned (name, version, integrity, in order) and the Node.js that installs them
 * (version and integrity for the host's architecture). A blueprint whose policy, description or
 * config files change, or a new version of it with the same pins, uses the image it had: an edit
 * of a comment no longer downloads the agent again (OpenClaw: ~200 MiB, ~650 MiB unpacked).
 *
 * The install runs npm inside a Carapace sandbox that reaches only the registry, and checks what
 * it installed against the blueprint's pinned versions and integrities (npm-install.ts). A
 * mismatch, a failed npm, or an interruption leaves no image: the install fills a staging
 * directory, and only a complete, checked one is renamed to the image's name (rename is atomic;
 * a staging directory left by a dead process is removed by the next install). npm's log of the
 * last install is kept beside it (`image-<hex>.npm.log`).
 *
 * The Node.js runtime is not copied when Carapace's own (the node-linux-<arch> package npm ci
 * installed for it) is the version and integrity the blueprint pins: that directory is bound
 * read-only instead. Another version is installed the same way, into `<state>/runtimes/`, shared
 * by every blueprint that pins it.
 */
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
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import type { RunHost, RunRequest } from '../runtime/one-off-run.js';
import { BlueprintError } from './errors.js';
import { installPackages } from './npm-install.js';
import type { Blueprint, BlueprintPackage } from './schema.js';
import { makeReadOnly, rmTree, type VerifiedBlueprint } from './store.js';

/** Where an image and its runtime appear inside a sandbox. */
export const IMAGE_MOUNT = '/opt/carapace/agent';
export const RUNTIME_MOUNT = '/opt/carapace/node';
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
  /** imageId: `sha256:<hex>` over the packages and the runtime that installs them. */
  id: string;
  /** Host directory of the packages (bound at IMAGE_MOUNT), null for a blueprint without any. */
  dir: string | null;
  /** Host directory of the runtime (bound at RUNTIME_MOUNT), null without one. */
  runtimeDir: string | null;
}

interface ImageRecord {
  /** The image's id (imageId); '' for a runtime. */
  id: string;
  /** The blueprint it was installed for first (others with the same pins share it). */
  name: string;
  version: string;
  packages: BlueprintPackage[];
  runtimeDir: string | null;
}

/**
 * An agent image's id: sha256 over the canonical JSON of what goes into the image (the
 * blueprint's packages, in order, and the Node.js that installs them for `arch`), so that two
 * blueprints (or two versions of one) with the same pins share one image.
 */
export function imageId(b: Blueprint, arch: OwnRuntime['arch']): string {
  const node = b.agent.runtime?.node;
  const canonical = JSON.stringify({
    form: 'carapace-image-v1',
    arch,
    node: node === undefined ? null : { version: node.version, integrity: node.integrity[arch] ?? null },
    packages: b.agent.packages.map((p) => ({ name: p.name, version: p.version, integrity: p.integrity })),
  });
  return `sha256:${createHash('sha256').update(canonical).digest('hex')}`;
}

export class ImageStore {
  readonly root: string;
  readonly runtimes: string;
  constructor(private readonly stateDir: string) {
    this.root = join(stateDir, 'images');
    this.runtimes = join(stateDir, 'runtimes');
  }

  /** The directory of the image `id` (imageId). */
  path(id: string): string {
    return join(this.root, `image-${id.slice('sha256:'.length)}`);
  }

  has(id: string): boolean {
    return existsSync(join(this.path(id), IMAGE_RECORD));
  }

  /** Whether the blueprint's image is there (its own, or one an earlier Carapace installed for it). */
  installed(v: VerifiedBlueprint, arch: OwnRuntime['arch']): boolean {
    return this.has(imageId(v.blueprint, arch)) || this.legacy(v, undefined) !== null;
  }

  /**
   * The image an earlier Carapace installed for this very blueprint, named by its digest
   * (`sha256-<hex>`), when its record holds the same pins (and runtime, when `runtimeDir` is
   * given): used where it is, so an upgrade downloads nothing again, and sandboxes that bind it
   * keep their path. Removed with the blueprint (removeLegacy).
   */
  private legacy(v: VerifiedBlueprint, runtimeDir: string | null | undefined): string | null {
    const dir = join(this.root, v.digest.replace(':', '-'));
    let record: { digest?: unknown; packages?: unknown; runtimeDir?: unknown };
    try {
      record = JSON.parse(readFileSync(join(dir, IMAGE_RECORD), 'utf8')) as typeof record;
    } catch {
      return null;
    }
    const same =
      record.digest === v.digest &&
      JSON.stringify(record.packages) === JSON.stringify(v.blueprint.agent.packages) &&
      (runtimeDir === undefined || record.runtimeDir === runtimeDir);
    return same ? dir : null;
  }

  /** The image of a verified blueprint, installed now unless it is already there (then instant). */
  async ensure(v: VerifiedBlueprint, host: ImageHost): Promise<AgentImage> {
    const b = v.blueprint;
    const id = imageId(b, host.own.arch);
    const runtimeDir = b.agent.runtime === undefined ? null : await this.ensureRuntime(b, host);
    if (b.agent.packages.length === 0) return { id, dir: null, runtimeDir };
    const target = this.path(id);
    if (this.has(id)) {
      this.checkRecord(target, id, v);
      return { id, dir: target, runtimeDir };
    }
    const legacy = this.legacy(v, runtimeDir);
    if (legacy !== null) return { id, dir: legacy, runtimeDir };
    mkdirSync(this.root, { recursive: true, mode: 0o755 });
    this.sweepStaging(this.root);
    const list = b.agent.packages.map((p) => `${p.name}@${p.version}`).join(', ');
    host.progress(
      `installing ${list} for blueprint ${b.name} ${b.version} (in a sandbox that reaches only registry.npmjs.org)`,
    );
    const staging = await installPackages(this.root, b.agent.packages, runtimeDir!, host, {
      stateDir: this.stateDir,
      log: `${target}.npm.log`,
    });
    const record: ImageRecord = {
      id,
      name: b.name,
      version: b.version,
      packages: b.agent.packages,
      runtimeDir,
    };
    writeFileSync(join(staging, IMAGE_RECORD), JSON.stringify(record, null, 2) + '\n');
    this.publish(staging, target);
    host.progress(`agent image ready: ${target}`);
    return { id, dir: target, runtimeDir };
  }

  /** Removes an image (a no-op when there is none). Sandboxes using it keep their open mount. */
  remove(id: string): void {
    rmTree(this.path(id));
    rmTree(`${this.path(id)}.npm.log`);
  }

  /**
   * Removes the image an earlier Carapace installed for the blueprint `digest` (named by the
   * blueprint's digest, `sha256-<hex>`, before images were shared by their pins).
   */
  removeLegacy(digest: string): void {
    if (!/^sha256:[0-9a-f]{64}$/.test(digest)) return;
    const dir = join(this.root, digest.replace(':', '-'));
    rmTree(dir);
    rmTree(`${dir}.npm.log`);
  }

  private checkRecord(dir: string, id: string, v: VerifiedBlueprint): void {
    let record: ImageRecord;
    try {
      record = JSON.parse(readFileSync(join(dir, IMAGE_RECORD), 'utf8')) as ImageRecord;
    } catch {
      throw new BlueprintError(
        'IMAGE_INVALID',
        `${dir}: not an agent image; remove it (carapace blueprint remove ${v.blueprint.name})`,
      );
    }
    if (record.id !== id)
      throw new BlueprintError(
        'IMAGE_INVALID',
        `${dir}: the image ${record.id}, not ${id}; remove it (carapace blueprint remove ${v.blueprint.name})`,
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
    const staging = await installPackages(this.runtimes, [pkg], host.own.dir, host, {
      stateDir: this.stateDir,
      log: `${target}.npm.log`,
    });
    const rec: ImageRecord = {
      id: '',
      name: pkg.name,
      version: pkg.version,
      packages: [pkg],
      runtimeDir: null,
    };
    writeFileSync(join(staging, IMAGE_RECORD), JSON.stringify(rec, null, 2) + '\n');
    this.publish(staging, target);
    return join(target, 'node_modules', `node-linux-${arch}`);
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
        // Another install of the same image finished first: its image is as good as ours.
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

function chownTree(dir: string, uid: number, gid: number): void {
  if (process.getuid?.() !== 0) return; // a normal user's files are theirs already
  const walk = (path: string): void => {
    lchownSync(path, uid, gid);
    const st = lstatSync(path);
    if (st.isDirectory()) for (const name of readdirSync(path)) walk(join(path, name));
  };
  walk(dir);
}
