/**
 * Globs of URL paths, binary paths and query values, compiled once to regular expressions.
 *
 * Paths (separator `/`): `*` matches any characters within one segment (`/bot*` matches `/bot123`),
 * `**` as a whole segment matches zero or more segments (`/repos/**` matches `/repos`, `/repos/a`
 * and `/repos/a/b`; `/a/**` + `/b` matches `/a/b` and `/a/x/y/b`), `**` inside a segment matches any
 * characters including `/`. The pattern `**` alone matches every path. Every other character is
 * literal, so `?`, `[` and `{` mean themselves. Query values have no separator: `*` matches anything.
 */

function escapeRegExp(ch: string): string {
  return /[\\^$.*+?()[\]{}|/]/.test(ch) ? `\\${ch}` : ch;
}

export function isGlob(pattern: string): boolean {
  return pattern.includes('*');
}

/** Compiles a `/`-separated glob (URL path or executable path). */
export function compilePathGlob(pattern: string): RegExp {
  if (pattern === '**') return /^.*$/s;
  let out = '^';
  let i = 0;
  while (i < pattern.length) {
    const ch = pattern[i] as string;
    if (ch === '*' && pattern[i + 1] === '*') {
      const atSegmentStart = i === 0 || pattern[i - 1] === '/';
      const next = pattern[i + 2];
      if (atSegmentStart && next === '/') {
        // `**/` — zero or more whole segments.
        out += '(?:.*/)?';
        i += 3;
        continue;
      }
      if (atSegmentStart && next === undefined && i > 0) {
        // trailing `/**` — the preceding `/` is optional along with what follows it.
        out = out.slice(0, -2) + '(?:/.*)?';
        i += 2;
        continue;
      }
      out += '.*';
      i += 2;
      continue;
    }
    out += ch === '*' ? '[^/]*' : escapeRegExp(ch);
    i++;
  }
  return new RegExp(`${out}$`, 's');
}

/** Compiles a glob with no separator (query values): `*` matches any characters. */
export function compileValueGlob(pattern: string): RegExp {
  let out = '^';
  for (const ch of pattern) out += ch === '*' ? '.*' : escapeRegExp(ch);
  return new RegExp(`${out}$`, 's');
}

/**
 * Compiled globs shared by the endpoints of one generation. Policies repeat their rules (`/**`,
 * the same API paths on many hosts), and each RegExp gets its own machine code once it runs: at
 * thousands of endpoints, one object per endpoint filled the processor's caches with copies of the
 * same code. None of these has the `g` or `y` flag, so `test` keeps no state between calls.
 */
export class GlobCache {
  readonly #compiled = new Map<string, RegExp>();

  #get(key: string, make: () => RegExp): RegExp {
    let re = this.#compiled.get(key);
    if (re === undefined) {
      re = make();
      this.#compiled.set(key, re);
    }
    return re;
  }

  /** A path glob; `caseless` for deny rules. */
  path(pattern: string, caseless: boolean): RegExp {
    return this.#get(`${caseless ? 'i' : 'p'}${pattern}`, () => {
      const re = compilePathGlob(pattern);
      return caseless ? new RegExp(re.source, `${re.flags}i`) : re;
    });
  }

  value(pattern: string): RegExp {
    return this.#get(`v${pattern}`, () => compileValueGlob(pattern));
  }
}
