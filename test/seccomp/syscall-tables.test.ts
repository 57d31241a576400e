import { existsSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { DENYLIST } from '../../src/sandbox/seccomp/denylist.js';
import { SYSCALL_TABLES } from '../../src/sandbox/seccomp/syscall-tables.js';

/** The UAPI headers of the host (Debian package linux-libc-dev); older than the newest calls. */
const HEADERS = {
  x86_64: '/usr/include/x86_64-linux-gnu/asm/unistd_64.h',
  aarch64: '/usr/include/asm-generic/unistd.h',
} as const;

/** Calls after Linux 6.1: the LSM calls (6.8), open_tree_attr (6.15). Numbers from the kernel's tables. */
const NEWER_THAN_HEADERS = new Set([
  'lsm_get_self_attr',
  'lsm_set_self_attr',
  'lsm_list_modules',
  'open_tree_attr',
]);

function readHeader(path: string): Map<string, number> {
  const numbers = new Map<string, number>();
  for (const m of readFileSync(path, 'utf8').matchAll(/#define __NR_(\w+)\s+(\d+)\b/g)) {
    numbers.set(m[1]!, Number(m[2]));
  }
  return numbers;
}

describe.each(['x86_64', 'aarch64'] as const)('%s syscall table', (arch) => {
  const table = SYSCALL_TABLES[arch];

  it.runIf(existsSync(HEADERS[arch]))('agrees with the kernel headers for every call they define', () => {
    const header = readHeader(HEADERS[arch]);
    const unchecked: string[] = [];
    for (const [name, nr] of Object.entries(table.numbers)) {
      const expected = header.get(name);
      if (expected === undefined) {
        unchecked.push(name);
        continue;
      }
      expect({ name, nr }).toEqual({ name, nr: expected });
    }
    // Only calls newer than the headers may be missing from them; Debian 12's are Linux 6.1's.
    expect(unchecked.filter((n) => !NEWER_THAN_HEADERS.has(n) || header.has(n))).toEqual([]);
    for (const name of table.absent) expect(header.has(name)).toBe(false);
  });

  it('has one number per name, and names every call of the denylist or says it is absent', () => {
    const numbers = Object.values(table.numbers);
    expect(new Set(numbers).size).toBe(numbers.length);
    for (const rule of DENYLIST) {
      expect(table.numbers[rule.syscall] !== undefined || table.absent.has(rule.syscall), rule.syscall).toBe(
        true,
      );
    }
  });
});
