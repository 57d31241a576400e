/**
 * Saves of the policy file of `carapace run --policy FILE`, applied to the running sandbox as they
 * happen. What a change may do is the apply unit's to decide (policy-apply.ts): network and
 * inference take effect at once; a change to a static section (filesystem, Landlock, process,
 * limits, listen ports), or a file that does not parse, is refused with a warning and the running
 * policy stays. This file only watches.
 *
 * The directory is watched, not the file: editors often save by writing a new file and renaming it
 * over the old one, which a watch on the old inode would miss. The file is read once more when the
 * watch begins: a save between the run's first reading and the watch would be missed otherwise.
 */
import { watch, type FSWatcher } from 'node:fs';
import { basename, dirname } from 'node:path';
import { readPolicyText } from '../policy/index.js';
import type { LivePolicy } from './policy-apply.js';

export interface PolicyWatchOptions {
  file: string;
  /** The running sandbox's policy: what a save is applied to. */
  live: LivePolicy;
  /** One line for the user (a refused change). */
  warn: (line: string) => void;
}

export class PolicyWatch {
  private watcher: FSWatcher | null;
  private pending: NodeJS.Timeout | null = null;
  private lastText: string | null = null;

  constructor(private readonly opts: PolicyWatchOptions) {
    const name = basename(opts.file);
    this.watcher = watch(dirname(opts.file), (_event, changed) => {
      if (changed !== null && changed !== name) return;
      // Coalesce the burst of events one save produces (truncate, write, rename).
      if (this.pending) clearTimeout(this.pending);
      this.pending = setTimeout(() => this.reload(), 15);
    });
    this.watcher.on('error', (err) => opts.warn(`policy watch on ${opts.file} stopped: ${err.message}`));
    // The run read the file before the sandbox started, and a save between that reading and this
    // watch made no event: read it once now, so the sandbox never runs a policy the file no longer
    // says. A file as it was read changes nothing (no generation, no event).
    this.reload();
  }

  /** Reads the file again and hands it to the apply unit if it changed. */
  reload(): void {
    this.pending = null;
    const { file, live, warn } = this.opts;
    let text: string;
    try {
      text = readPolicyText(file);
    } catch {
      return; // between an editor's unlink and rename; the next event brings the new file
    }
    if (text === this.lastText) return;
    this.lastText = text;
    const plan = live.plan(text, file);
    // A save that changes nothing the sandbox sees (a comment, the layout) is not an event.
    if (plan.outcome === 'applied' && plan.sections.static.length + plan.sections.dynamic.length === 0)
      return;
    const result = live.commit(plan, { source: 'file', file });
    if (result.outcome === 'refused') {
      warn(`policy change refused, the running policy stays: ${result.message}`);
    } else if (result.outcome === 'needs-restart') {
      warn(
        `policy change refused, the running policy stays: ${result.message} (it is fixed when the sandbox starts: run it again)`,
      );
    }
  }

  close(): void {
    if (this.pending) clearTimeout(this.pending);
    this.watcher?.close();
    this.watcher = null;
  }
}
