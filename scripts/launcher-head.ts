/**
 * The first line(s) of the `carapace` launcher, which scripts/build-cli.ts writes and
 * test/launcher.test.ts runs: the kernel starts the named Node directly, no shell in front of it.
 */

/** Linux's execve reads this many bytes of a script's `#!` line (BINPRM_BUF_SIZE is 256 since 5.1). */
const SHEBANG_MAX = 255;

/**
 * `#!NODE` when the path can be one (no whitespace, short enough); otherwise a line that is both a
 * shell command and JavaScript, which costs one `/bin/sh` exec per start: sh runs `: //` (a no-op)
 * and execs Node on this file, and to JavaScript the line is a string followed by a comment.
 */
export function launcherHead(node: string): string {
  const direct = `#!${node}`;
  if (!/\s/.test(node) && Buffer.byteLength(direct) <= SHEBANG_MAX) return `${direct}\n`;
  const quoted = `'${node.replaceAll("'", `'\\''`)}'`;
  return `#!/bin/sh\n':' //; exec ${quoted} "$0" "$@"\n`;
}
