/**
 * Which programs a network policy entry admits.
 *
 * Decision — a binary admits its own processes; the programs it starts count only when the entry
 * says so (`descendants: true` on that binary, a Carapace extension). OpenShell counts ancestors
 * always, so that allowing `/usr/local/bin/claude` allows the `node`, `git` or `curl` it spawns.
 * Carapace cannot make that exact: the proxy sees the parent chain as it is when the connection is
 * made (`/proc/<pid>/stat` and `/proc/<pid>/exe`, taken from the kernel, never from argv), and a
 * process's executable changes at exec while its children stay. A parent that forks first and execs
 * an allowed program afterwards makes its earlier child look like that program's child, though it
 * never descended from that exec. Nothing a rootless host can read tells the two apart (a process's
 * exec time is not in /proc; the kernel's process-event connector needs CAP_NET_ADMIN), so counting
 * ancestors is the policy author's choice per binary, made knowing that gap (docs/security.md).
 * OpenShell files load unchanged; their binaries admit exactly themselves until marked.
 *
 * Decision — an absent `binaries` list admits every program in the sandbox. OpenShell's runtime
 * admits none (its tools and NemoClaw's comments assume "any"; see NVIDIA/OpenShell#3476); an
 * explicit empty list is rejected by the loader so the two cannot be confused.
 */
import { compilePathGlob, isGlob } from '../patterns/glob.js';
import type { Binary } from '../schema/schema.js';

export interface BinaryMatch {
  /** The policy pattern that matched, or null when the entry admits any program. */
  pattern: string | null;
  /** The path that matched it: the caller itself or one of its ancestors. */
  path: string | null;
  viaAncestor: boolean;
}

export interface BinaryMatcher {
  readonly anyBinary: boolean;
  readonly patterns: readonly string[];
  match(binary: string | undefined, ancestors: readonly string[] | undefined): BinaryMatch | null;
  /**
   * For a caller `match` refused: the first ancestor that a listed binary WITHOUT `descendants`
   * matches (it would have admitted the caller had it opted in), or null. For the denial's reason.
   */
  heldBack(ancestors: readonly string[] | undefined): string | null;
}

const ANY: BinaryMatch = Object.freeze({ pattern: null, path: null, viaAncestor: false });

interface Compiled {
  exact: Set<string>;
  globs: { pattern: string; re: RegExp }[];
}

function compileSet(binaries: readonly Binary[]): Compiled {
  const out: Compiled = { exact: new Set(), globs: [] };
  for (const b of binaries) {
    if (isGlob(b.path)) out.globs.push({ pattern: b.path, re: compilePathGlob(b.path) });
    else out.exact.add(b.path);
  }
  return out;
}

function find(set: Compiled, path: string): string | null {
  if (set.exact.has(path)) return path;
  for (const g of set.globs) if (g.re.test(path)) return g.pattern;
  return null;
}

export function compileBinaryMatcher(binaries: readonly Binary[] | undefined): BinaryMatcher {
  if (binaries === undefined) {
    return { anyBinary: true, patterns: [], match: () => ANY, heldBack: () => null };
  }
  const all = compileSet(binaries);
  const parents = compileSet(binaries.filter((b) => b.descendants === true));
  const hasParents = parents.exact.size > 0 || parents.globs.length > 0;
  const patterns = Object.freeze(binaries.map((b) => b.path));
  return {
    anyBinary: false,
    patterns,
    match(binary, ancestors) {
      if (binary !== undefined && binary !== '') {
        const pattern = find(all, binary);
        if (pattern !== null) return { pattern, path: binary, viaAncestor: false };
      }
      if (hasParents && ancestors !== undefined) {
        for (const a of ancestors) {
          const pattern = find(parents, a);
          if (pattern !== null) return { pattern, path: a, viaAncestor: true };
        }
      }
      return null;
    },
    heldBack(ancestors) {
      for (const a of ancestors ?? []) if (find(all, a) !== null) return a;
      return null;
    },
  };
}
