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
import { GlobCache, isGlob } from '../patterns/glob.js';
import type { Binary } from '../schema/schema.js';

export interface BinaryMatch {
  /** The policy pattern that matched, or null when the entry admits any program. */
  pattern: string | null;
  /** The path that matched it: the caller itself or one of its ancestors. */
  path: string | null;
  viaAncestor: boolean;
}

/** A match and how a decision's reason names it, e.g. `"/usr/bin/git"` or `any program`. */
export interface BinaryHit {
  readonly match: BinaryMatch;
  readonly text: string;
}

export interface BinaryMatcher {
  readonly anyBinary: boolean;
  readonly patterns: readonly string[];
  /**
   * The pattern that admits the caller, or null. A hit on an exact path or on an entry for any
   * program is made at compile time and shared (frozen): a decision allocates nothing for it.
   */
  match(binary: string | undefined, ancestors: readonly string[] | undefined): BinaryHit | null;
  /**
   * For a caller `match` refused: the first ancestor that a listed binary WITHOUT `descendants`
   * matches (it would have admitted the caller had it opted in), or null. For the denial's reason.
   */
  heldBack(ancestors: readonly string[] | undefined): string | null;
}

function hit(pattern: string | null, path: string | null, viaAncestor: boolean): BinaryHit {
  const match: BinaryMatch = Object.freeze({ pattern, path, viaAncestor });
  return Object.freeze({ match, text: describeBinaryMatch(match) });
}

function describeBinaryMatch(b: BinaryMatch): string {
  if (b.pattern === null) return 'any program';
  const who = b.viaAncestor ? `a child of "${b.path}"` : `"${b.path}"`;
  return b.pattern === b.path ? who : `${who} (matches "${b.pattern}")`;
}

const ANY: BinaryHit = hit(null, null, false);

interface Compiled {
  /** Exact path → its hit (the path matched itself). */
  exact: Map<string, BinaryHit>;
  globs: { pattern: string; re: RegExp }[];
}

function compileSet(binaries: readonly Binary[], viaAncestor: boolean, globs: GlobCache): Compiled {
  const out: Compiled = { exact: new Map(), globs: [] };
  for (const b of binaries) {
    if (isGlob(b.path)) out.globs.push({ pattern: b.path, re: globs.path(b.path, false) });
    else if (!out.exact.has(b.path)) out.exact.set(b.path, hit(b.path, b.path, viaAncestor));
  }
  return out;
}

/** The hit for `path`: exact paths first, then globs in the order listed (as before the split). */
function find(set: Compiled, path: string, viaAncestor: boolean): BinaryHit | null {
  const exact = set.exact.get(path);
  if (exact !== undefined) return exact;
  for (const g of set.globs) if (g.re.test(path)) return hit(g.pattern, path, viaAncestor);
  return null;
}

function matches(set: Compiled, path: string): boolean {
  if (set.exact.has(path)) return true;
  for (const g of set.globs) if (g.re.test(path)) return true;
  return false;
}

export function compileBinaryMatcher(
  binaries: readonly Binary[] | undefined,
  globs: GlobCache = new GlobCache(),
): BinaryMatcher {
  if (binaries === undefined) {
    return { anyBinary: true, patterns: [], match: () => ANY, heldBack: () => null };
  }
  const all = compileSet(binaries, false, globs);
  const parents = compileSet(
    binaries.filter((b) => b.descendants === true),
    true,
    globs,
  );
  const hasParents = parents.exact.size > 0 || parents.globs.length > 0;
  const patterns = Object.freeze(binaries.map((b) => b.path));
  return {
    anyBinary: false,
    patterns,
    match(binary, ancestors) {
      if (binary !== undefined && binary !== '') {
        const h = find(all, binary, false);
        if (h !== null) return h;
      }
      if (hasParents && ancestors !== undefined) {
        for (const a of ancestors) {
          const h = find(parents, a, true);
          if (h !== null) return h;
        }
      }
      return null;
    },
    heldBack(ancestors) {
      for (const a of ancestors ?? []) if (matches(all, a)) return a;
      return null;
    },
  };
}
