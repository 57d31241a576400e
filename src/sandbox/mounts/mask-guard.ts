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
 * checks at once too: nothing watched while no one held it. What it needs for that is written in
 * the sandbox's runtime directory only for a sandbox that can outlive its starter (`detached`):
 * a file is a start's most expensive step (docs/benchmarks.md), and no one adopts the others.
 *
 * carapace-mask that cannot be started at all (a spawn error: the process table or memory full,
 * the binary replaced under us) is said once and tried again, sooner at first, then once a minute,
 * until it runs: the masks stay off meanwhile, which a guard that gave up would leave them for
 * good. One that runs and cannot do its work (a kernel without open_tree) stops the guard: trying
 * again would not change the kernel.
 */
import { spawn } from 'node:child_process';
import { readFileSync, watch, writeFileSync, type FSWatcher } from 'node:fs';
import { basename, dirname, join, posix } from 'node:path';
import type { GuardedMask, MountPlan } from './mount-plan.js';
import { nativeMasker } from '../native-paths.js';

/** What one check did: targets bound again, and those that could not be (with why). */
export interface MaskCheck {
  restored: string[];
  /**
   * Targets the host made another kind of file (a directory where a masked file was, or the
   * reverse): masked by an empty one of their kind (carapace-mask.c), the host's content hidden.
   */
  emptied?: string[];
  failed: string[];
  /** The check could not run at all (a kernel without open_tree or openat2): guarding stops. */
  error?: string;
  /** carapace-mask could not be started (why): the guard tries again (RETRY_FIRST_MS on). */
  unavailable?: string;
}

/**
 * A rename is checked at once (every millisecond the host's file is there, the agent can read it);
 * renames while a check runs are covered by one more check after it.
 */
const CHECK_DELAY_MS = 0;

/** carapace-mask's exit when the pid is not the sandbox any more. */
const EXIT_GONE = 3;

/** The first retry of a carapace-mask that could not be started; each next one waits twice as long. */
export const RETRY_FIRST_MS = 1_000;
const RETRY_MAX_MS = 60_000;

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
  /** The wait before the next try while carapace-mask cannot be started; 0 when it can. */
  private retryMs = 0;
  /** [host directory, name] of every watch this guard wants. */
  private readonly held: [string, string][] = [];

  /**
   * Watches the host directories of `masks` (in-sandbox paths, mirrored from `hostRoot`).
   * `report` hears every check that restored or failed something, and a directory that cannot be
   * watched.
   */
  static arm(
    hostRoot: string,
    masks: GuardedMask[],
    report: (c: MaskCheck) => void,
    opts: GuardOptions = {},
  ): MaskGuard {
    const guard = new MaskGuard(masks, report, opts);
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
    private readonly opts: GuardOptions,
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
    const result = await runMasker(
      this.opts.masker ?? nativeMasker(),
      this.pid,
      this.start,
      this.masks,
      this.opts.fileMask,
    );
    this.running = false;
    if (this.closed) return;
    if (result === 'gone') return this.close();
    if (result.unavailable !== undefined) {
      // Said once per run of failures; renames meanwhile wait for the retry, which checks them all.
      if (this.retryMs === 0) this.report(result);
      this.retryMs = Math.min(this.retryMs === 0 ? RETRY_FIRST_MS : this.retryMs * 2, RETRY_MAX_MS);
      return this.schedule(this.retryMs);
    }
    this.retryMs = 0;
    if (result.error !== undefined) this.close(); // cannot be done here: say so once
    if (
      result.error !== undefined ||
      result.restored.length > 0 ||
      (result.emptied?.length ?? 0) > 0 ||
      result.failed.length > 0
    )
      this.report(result);
    if (this.again && !this.closed) this.schedule(CHECK_DELAY_MS);
  }
}

export interface GuardOptions {
  /** The file mask, in-sandbox (MountPlan.fileMask): a guarded directory the host made a file gets it. */
  fileMask?: string | undefined;
  /** carapace-mask's path; the package's own when not given. */
  masker?: string | undefined;
}

/** Runs carapace-mask once over every mask of one sandbox. */
function runMasker(
  masker: string,
  pid: number,
  start: number,
  masks: GuardedMask[],
  fileMask: string | undefined,
): Promise<MaskCheck | 'gone'> {
  const args = ['--pid', String(pid), '--start', String(start)];
  if (fileMask !== undefined) args.push('--file-mask', fileMask);
  args.push('--');
  for (const m of masks) args.push(m.source, m.target);
  return new Promise((resolve) => {
    // An empty environment, like every helper of ours that acts on a sandbox's namespaces.
    const child = spawn(masker, args, { env: {}, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    // Not started at all (ENOENT, EAGAIN, ENOMEM, …): the first settlement wins over 'close'.
    child.on('error', (e) =>
      resolve({ restored: [], failed: [], unavailable: `cannot run ${masker}: ${e.message}` }),
    );
    child.on('close', (code) => {
      if (code === EXIT_GONE) return resolve('gone');
      const restored: string[] = [];
      const emptied: string[] = [];
      const failed: string[] = [];
      for (const line of out.split('\n')) {
        // `kept`, `absent` and `renamed` (renamed over again under it: a check follows) are none.
        if (line.startsWith('masked ')) restored.push(line.slice('masked '.length));
        else if (line.startsWith('emptied ')) emptied.push(line.slice('emptied '.length));
        else if (line.startsWith('failed ')) failed.push(line.slice('failed '.length));
      }
      if (code === 0 || code === 1) resolve({ restored, emptied, failed });
      else
        resolve({ restored, emptied, failed, error: err.trim() || `carapace-mask exited ${String(code)}` });
    });
  });
}

/** What a later process needs to guard the sandbox again, kept in its runtime directory. */
const GUARD_FILE = 'guarded.json';

/**
 * Arms the guard of a sandbox about to start (null when it has no mask over a host tree). With
 * `adoptable` (a sandbox that may outlive this process), writes down what it guards for a process
 * that takes the sandbox over (adoptGuard).
 */
export function guardMasks(
  plan: MountPlan,
  runtime: string,
  hostRoot: string,
  report: ((c: MaskCheck) => void) | undefined,
  opts: { adoptable: boolean; masker?: string | undefined },
): MaskGuard | null {
  if (plan.guarded.length === 0) return null;
  if (opts.adoptable)
    writeFileSync(
      join(runtime, GUARD_FILE),
      JSON.stringify({ hostRoot, masks: plan.guarded, fileMask: plan.fileMask }),
    );
  return MaskGuard.arm(hostRoot, plan.guarded, report ?? (() => {}), {
    fileMask: plan.fileMask,
    masker: opts.masker,
  });
}

/** Guards again a running sandbox this process did not start; checks it at once. */
export function adoptGuard(
  runtime: string,
  pid: number,
  start: number,
  report: ((c: MaskCheck) => void) | undefined,
): MaskGuard | null {
  let saved: { hostRoot?: unknown; masks?: unknown; fileMask?: unknown };
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
  const fileMask = typeof saved.fileMask === 'string' ? saved.fileMask : undefined;
  const guard = MaskGuard.arm(saved.hostRoot, masks, report ?? (() => {}), { fileMask });
  guard.attach(pid, start, true);
  return guard;
}
