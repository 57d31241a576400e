/**
 * Keeps a running sandbox's masks in place (mount-plan.ts `guarded`; native/carapace-mask.c says
 * how they can go: a host that renames a new file over a masked name detaches the mask).
 *
 * One inotify watch per host directory per process, shared by every sandbox guarded here. A
 * rename there (a file replaced, made or removed) under a guarded name, or of a directory on the
 * way to one, has each sandbox that guards it checked by carapace-mask, which binds again what is
 * gone and leaves the rest. Such a directory, and every watched one beneath it, is then watched
 * afresh: a watch follows its inode, so after `mv ssh ssh.old; mv ssh.new ssh` the old watches see
 * only the old tree, and one absent at the start is watched once it comes. Checks never overlap
 * for one sandbox: renames during one (a `useradd` replaces four files in a row) make one more. The window this leaves - between the host's rename
 * and the bind again, a few milliseconds - is in docs/security.md.
 *
 * Cost: the watches are the host's; a check is one short process per sandbox, run only when the
 * host changes its own files. Nothing a sandbox does can make one happen, so there is nothing to
 * charge a sandbox for.
 *
 * A guard is armed before the sandbox exists (its watches then see a rename that comes while bwrap
 * lays the masks) and attached to the init once it runs; a rename seen before that is checked at
 * once. A guard taken over by a process that did not start the sandbox (a restarted gateway)
 * checks at once too: nothing watched while no one held it.
 */
import { spawn } from 'node:child_process';
import { readFileSync, watch, writeFileSync, type FSWatcher } from 'node:fs';
import { basename, dirname, join, posix } from 'node:path';
import type { GuardedMask, MountPlan } from './mount-plan.js';
import { nativeMasker } from './native-paths.js';

/** What one check did: targets bound again, and those that could not be (with why). */
export interface MaskCheck {
  restored: string[];
  failed: string[];
  /** The check could not run at all (a kernel without open_tree or openat2): guarding stops. */
  error?: string;
}

/**
 * A rename is checked at once (every millisecond the host's file is there, the agent can read it);
 * renames while a check runs are covered by one more check after it.
 */
const CHECK_DELAY_MS = 0;

/** carapace-mask's exit when the pid is not the sandbox any more. */
const EXIT_GONE = 3;

/**
 * What is watched for whom: host directory → name in it → the guards it matters to. A directory
 * that is not there (yet), or that was replaced, stays here without a watcher until its parent's
 * watch sees it come (rewatch).
 */
const wants = new Map<string, Map<string, Set<MaskGuard>>>();
/** The inotify watch of each wanted directory that could be watched. */
const watches = new Map<string, FSWatcher>();

/**
 * Watches `dir` unless it is watched already; returns why it cannot be, or null (watched, or not
 * there yet: its parent's watch sees it come).
 */
function watchDir(dir: string): string | null {
  if (watches.has(dir)) return null;
  let watcher: FSWatcher;
  try {
    // Not persistent: a guard never keeps a one-shot run's process alive.
    watcher = watch(dir, { persistent: false }, (event, file) => onRename(dir, event, file));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return null;
    // EMFILE, ENOSPC: the user's inotify limits, which count every user namespace the user owns,
    // so a rootless sandbox's agent can use them up. Said, never a silent loss of the guard.
    return `${dir}: cannot be watched (${code ?? String(err)}): a file the host replaces there stays unmasked`;
  }
  watcher.on('error', () => {
    watcher.close();
    if (watches.get(dir) === watcher) watches.delete(dir);
  });
  watches.set(dir, watcher);
  return null;
}

function subscribe(dir: string, name: string, guard: MaskGuard): string | null {
  let names = wants.get(dir);
  if (names === undefined) wants.set(dir, (names = new Map()));
  let guards = names.get(name);
  if (guards === undefined) names.set(name, (guards = new Set()));
  guards.add(guard);
  return watchDir(dir);
}

function unsubscribe(dir: string, name: string, guard: MaskGuard): void {
  const names = wants.get(dir);
  const guards = names?.get(name);
  if (!names || !guards) return;
  guards.delete(guard);
  if (guards.size === 0) names.delete(name);
  if (names.size === 0) {
    wants.delete(dir);
    watches.get(dir)?.close();
    watches.delete(dir);
  }
}

/**
 * `path` was renamed, made or removed: every wanted directory at or beneath it is watched afresh.
 * An inotify watch follows its inode, so the old ones see the old directories (moved aside or
 * gone), and one that could not be made before may be made now.
 */
function rewatch(path: string): void {
  for (const dir of wants.keys()) {
    if (dir !== path && !dir.startsWith(`${path}/`)) continue;
    watches.get(dir)?.close();
    watches.delete(dir);
    const why = watchDir(dir);
    if (why !== null) for (const guards of wants.get(dir)!.values()) for (const g of guards) g.unwatched(why);
  }
}

function onRename(dir: string, event: string, file: string | Buffer | null): void {
  // A write in place changes no mount: only names that come, go or are replaced matter.
  if (event !== 'rename') return;
  const names = wants.get(dir);
  if (!names) return;
  const name = file === null ? null : String(file);
  for (const [watched, guards] of names) {
    if (name !== null && name !== watched) continue;
    rewatch(join(dir, watched));
    for (const g of guards) g.changed();
  }
}

export class MaskGuard {
  private pid = 0;
  private start = 0;
  private missed = false;
  private timer: NodeJS.Timeout | null = null;
  private running = false;
  private again = false;
  private closed = false;
  /** [host directory, name] of every watch this guard wants. */
  private readonly held: [string, string][] = [];

  /**
   * Watches the host directories of `masks` (in-sandbox paths, mirrored from `hostRoot`).
   * `report` hears every check that restored or failed something, and a directory that cannot be
   * watched.
   */
  static arm(hostRoot: string, masks: GuardedMask[], report: (c: MaskCheck) => void): MaskGuard {
    const guard = new MaskGuard(masks, report);
    const wanted = new Set<string>();
    for (const { target } of masks) {
      // The name itself, and each directory on the way to it below the top (/etc/ssh for
      // /etc/ssh/<key>): a replaced directory takes the masks beneath with it.
      for (let p = target; posix.dirname(p) !== '/'; p = posix.dirname(p)) {
        wanted.add(join(hostRoot, p));
      }
    }
    const unwatched = new Set<string>();
    for (const host of wanted) {
      const why = guard.hold(dirname(host), basename(host));
      if (why !== null) unwatched.add(why);
    }
    if (unwatched.size > 0) report({ restored: [], failed: [...unwatched] });
    return guard;
  }

  private constructor(
    readonly masks: GuardedMask[],
    private readonly report: (c: MaskCheck) => void,
  ) {}

  private hold(dir: string, name: string): string | null {
    this.held.push([dir, name]);
    return subscribe(dir, name, this);
  }

  /** The sandbox runs: its init's host pid and start time (/proc/<pid>/stat field 22). */
  attach(pid: number, start: number, checkNow = false): void {
    this.pid = pid;
    this.start = start;
    if (checkNow || this.missed) this.schedule(0);
  }

  /** @internal A directory it wants watched cannot be (watchDir): reported, the rest still guarded. */
  unwatched(why: string): void {
    if (!this.closed) this.report({ restored: [], failed: [why] });
  }

  /** @internal A watched name was renamed. */
  changed(): void {
    if (this.closed) return;
    if (this.pid === 0) this.missed = true;
    else this.schedule(CHECK_DELAY_MS);
  }

  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    for (const [dir, name] of this.held) unsubscribe(dir, name, this);
    this.held.length = 0;
  }

  /** Checks every mask after delayMs; one asked for while a check runs follows that one. */
  private schedule(delayMs: number): void {
    if (this.closed) return;
    if (this.running) {
      this.again = true;
      return;
    }
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.check();
    }, delayMs);
    this.timer.unref();
  }

  private async check(): Promise<void> {
    this.running = true;
    this.again = false;
    const result = await runMasker(this.pid, this.start, this.masks);
    this.running = false;
    if (this.closed) return;
    if (result === 'gone') return this.close();
    if (result.error !== undefined) this.close(); // cannot be done here: say so once
    if (result.error !== undefined || result.restored.length > 0 || result.failed.length > 0)
      this.report(result);
    if (this.again && !this.closed) this.schedule(CHECK_DELAY_MS);
  }
}

/** Runs carapace-mask once over every mask of one sandbox. */
function runMasker(pid: number, start: number, masks: GuardedMask[]): Promise<MaskCheck | 'gone'> {
  const args = ['--pid', String(pid), '--start', String(start), '--'];
  for (const m of masks) args.push(m.source, m.target);
  return new Promise((resolve) => {
    // An empty environment, like every helper of ours that acts on a sandbox's namespaces.
    const child = spawn(nativeMasker(), args, { env: {}, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    child.on('error', (e) => resolve({ restored: [], failed: [], error: e.message }));
    child.on('close', (code) => {
      if (code === EXIT_GONE) return resolve('gone');
      const restored: string[] = [];
      const failed: string[] = [];
      for (const line of out.split('\n')) {
        // `kept`, `absent` and `renamed` (renamed over again under it: a check follows) are neither.
        if (line.startsWith('masked ')) restored.push(line.slice('masked '.length));
        else if (line.startsWith('failed ')) failed.push(line.slice('failed '.length));
      }
      if (code === 0 || code === 1) resolve({ restored, failed });
      else resolve({ restored, failed, error: err.trim() || `carapace-mask exited ${String(code)}` });
    });
  });
}

/** What a later process needs to guard the sandbox again, kept in its runtime directory. */
const GUARD_FILE = 'guarded.json';

/**
 * Arms the guard of a sandbox about to start (null when it has no mask over a host tree), and
 * writes down what it guards for a process that takes the sandbox over (adoptGuard).
 */
export function guardMasks(
  plan: MountPlan,
  runtime: string,
  hostRoot: string,
  report: ((c: MaskCheck) => void) | undefined,
): MaskGuard | null {
  if (plan.guarded.length === 0) return null;
  writeFileSync(join(runtime, GUARD_FILE), JSON.stringify({ hostRoot, masks: plan.guarded }));
  return MaskGuard.arm(hostRoot, plan.guarded, report ?? (() => {}));
}

/** Guards again a running sandbox this process did not start; checks it at once. */
export function adoptGuard(
  runtime: string,
  pid: number,
  start: number,
  report: ((c: MaskCheck) => void) | undefined,
): MaskGuard | null {
  let saved: { hostRoot?: unknown; masks?: unknown };
  try {
    // Our own file, in the host's runtime directory of the sandbox (not one it can write).
    saved = JSON.parse(readFileSync(join(runtime, GUARD_FILE), 'utf8')) as typeof saved;
  } catch {
    return null; // started by a Carapace that did not guard masks, or without any
  }
  const masks = Array.isArray(saved.masks)
    ? (saved.masks as unknown[]).filter(
        (m): m is GuardedMask =>
          typeof m === 'object' &&
          m !== null &&
          typeof (m as GuardedMask).source === 'string' &&
          typeof (m as GuardedMask).target === 'string',
      )
    : [];
  if (masks.length === 0 || typeof saved.hostRoot !== 'string') return null;
  const guard = MaskGuard.arm(saved.hostRoot, masks, report ?? (() => {}));
  guard.attach(pid, start, true);
  return guard;
}
