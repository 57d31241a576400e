/** Runs commands in real sandboxes through the built CLI. */
import { chmodSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { carapace, freshHome, type CliResult } from './cli.js';

/**
 * A temporary directory the sandbox uids may traverse (mkdtemp makes 0700 dirs; bwrap runs as the
 * sandbox's uid and must pass through the parents of what it binds).
 */
export function sharedTempDir(prefix = 'carapace-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  chmodSync(dir, 0o711);
  return dir;
}

export function runInSandbox(command: string[], options: string[] = [], home = freshHome()): CliResult {
  return carapace(['run', ...options, '--', ...command], { home });
}

/**
 * A Python program for inside the sandbox that prints `ok` or the errno's name for each attempt,
 * so a test asserts exactly what the kernel answered. `report(r)` judges a raw libc return value,
 * `attempt(f)` a Python call that raises OSError.
 */
export function pySyscall(body: string): string[] {
  return [
    'python3',
    '-c',
    [
      'import ctypes, errno, os, socket, sys',
      'libc = ctypes.CDLL(None, use_errno=True)',
      'def report(r):',
      '    e = ctypes.get_errno()',
      '    print("ok" if r >= 0 else errno.errorcode.get(e, str(e)))',
      'def attempt(f):',
      '    try:',
      '        f(); print("ok")',
      '    except OSError as e:',
      '        print(errno.errorcode.get(e.errno, str(e.errno)))',
      body,
    ].join('\n'),
  ];
}
