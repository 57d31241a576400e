/**
 * What runs on the host, read from /proc: `ps` output piped through a child's buffer is cut off
 * (or refused, ENOBUFS) on a busy host, and a check that a secret or a leftover is absent must
 * read every process.
 */
import { readdirSync, readFileSync } from 'node:fs';

/** Every process's command line, its arguments joined by spaces. */
export function commandLines(): string[] {
  return readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .map((pid) => {
      try {
        return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ');
      } catch {
        return ''; // gone meanwhile
      }
    });
}
