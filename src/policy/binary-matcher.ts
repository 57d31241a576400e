/**
 * Which programs a network policy entry admits.
 *
 * Decision — ancestors count (as in OpenShell): an entry admits a connection when the calling
 * executable OR any of its ancestors matches one of its `binaries`. Allowing `/usr/local/bin/claude`
 * therefore allows the `node`, `git` or `curl` it spawns. This is what makes a per-agent grant
 * work at all (agents run tools as child processes), and it is safe because the proxy takes every
 * path from the kernel (`/proc/<pid>/exe` of the caller and of each parent up to the sandbox's
 * init), never from argv, which a process can forge.
 *
 * Decision — an absent `binaries` list admits every program in the sandbox. OpenShell's runtime
 * admits none (its tools and NemoClaw's comments assume "any"; see NVIDIA/OpenShell#3476); an
 * explicit empty list is rejected by the loader so the two cannot be confused.
 */
import { compilePathGlob, isGlob } from './glob.js';
import type { Binary } from './schema.js';

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
}

const ANY: BinaryMatch = Object.freeze({ pattern: null, path: null, viaAncestor: false });

export function compileBinaryMatcher(binaries: readonly Binary[] | undefined): BinaryMatcher {
  if (binaries === undefined) {
    return { anyBinary: true, patterns: [], match: () => ANY };
  }
  const exact = new Set<string>();
  const globs: { pattern: string; re: RegExp }[] = [];
  for (const b of binaries) {
    if (isGlob(b.path)) globs.push({ pattern: b.path, re: compilePathGlob(b.path) });
    else exact.add(b.path);
  }
  const patterns = Object.freeze(binaries.map((b) => b.path));
  const test = (path: string, viaAncestor: boolean): BinaryMatch | null => {
    if (exact.has(path)) return { pattern: path, path, viaAncestor };
    for (const g of globs) if (g.re.test(path)) return { pattern: g.pattern, path, viaAncestor };
    return null;
  };
  return {
    anyBinary: false,
    patterns,
    match(binary, ancestors) {
      if (binary !== undefined && binary !== '') {
        const m = test(binary, false);
        if (m !== null) return m;
      }
      if (ancestors !== undefined) {
        for (const a of ancestors) {
          const m = test(a, true);
          if (m !== null) return m;
        }
      }
      return null;
    },
  };
}
