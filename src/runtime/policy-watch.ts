/**
 * Live policy changes for a running sandbox: when the policy file is saved, its network and
 * inference sections take effect at once; a change to a static section (filesystem, Landlock,
 * process, limits, listen ports) cannot apply to a running sandbox, so it is refused with a warning
 * and the running policy stays. A file that does not parse is refused the same way.
 *
 * The directory is watched, not the file: editors often save by writing a new file and renaming it
 * over the old one, which a watch on the old inode would miss.
 */
import { watch, type FSWatcher } from 'node:fs';
import { basename, dirname } from 'node:path';
import { configChange, type AuditSink } from '../audit/index.js';
import {
  changedSections,
  compilePolicy,
  parsePolicy,
  readPolicyText,
  type Policy,
  type PolicyGeneration,
} from '../policy/index.js';

export interface PolicyWatchOptions {
  file: string;
  sandbox: string;
  initial: Policy;
  audit: AuditSink;
  /** Applies a new compiled generation (and audits it). */
  apply: (generation: PolicyGeneration) => void;
  /** One line for the user (a refused change). */
  warn: (line: string) => void;
}

export class PolicyWatch {
  private watcher: FSWatcher | null;
  private current: Policy;
  private pending: NodeJS.Timeout | null = null;
  private lastText: string | null = null;

  constructor(private readonly opts: PolicyWatchOptions) {
    this.current = opts.initial;
    const name = basename(opts.file);
    this.watcher = watch(dirname(opts.file), (_event, changed) => {
      if (changed !== null && changed !== name) return;
      // Coalesce the burst of events one save produces (truncate, write, rename).
      if (this.pending) clearTimeout(this.pending);
      this.pending = setTimeout(() => this.reload(), 15);
    });
    this.watcher.on('error', (err) => opts.warn(`policy watch on ${opts.file} stopped: ${err.message}`));
  }

  /** Reads the file again and applies it if it is valid and only dynamic sections changed. */
  reload(): void {
    this.pending = null;
    const { file, sandbox, audit, warn } = this.opts;
    let text: string;
    try {
      text = readPolicyText(file);
    } catch {
      return; // between an editor's unlink and rename; the next event brings the new file
    }
    if (text === this.lastText) return;
    this.lastText = text;
    const parsed = parsePolicy(text, file);
    if (!parsed.ok) {
      const first = parsed.diagnostics[0];
      const where = first ? `${first.file}:${first.line}:${first.col}: ${first.message}` : file;
      warn(`policy change refused, the running policy stays: ${where}`);
      audit.emit(
        configChange({
          sandbox,
          accepted: false,
          message: `policy change refused: ${where}`,
          reason: 'invalid policy',
        }),
      );
      return;
    }
    const sections = changedSections(this.current, parsed.policy);
    if (!sections.hotReloadable) {
      const what = sections.static.length ? sections.static.join(', ') : 'version';
      warn(
        `policy change refused, the running policy stays: ${what} cannot change while the sandbox runs (restart it)`,
      );
      audit.emit(
        configChange({
          sandbox,
          accepted: false,
          message: `policy change refused: static sections changed (${what})`,
          reason: 'static section changed',
          details: { static: sections.static },
        }),
      );
      return;
    }
    if (sections.dynamic.length === 0) return;
    // The proxy audits the swap itself (5019, with the tunnels it closed).
    this.opts.apply(compilePolicy(parsed.policy));
    this.current = parsed.policy;
  }

  close(): void {
    if (this.pending) clearTimeout(this.pending);
    this.watcher?.close();
    this.watcher = null;
  }
}
