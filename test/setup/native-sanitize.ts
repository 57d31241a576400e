/**
 * vitest globalSetup of the "native (ASan+UBSan)" project: builds native/build/sanitize/ before its
 * tests start (make rebuilds only what changed). See test/native/native-build.ts.
 */
import { execFileSync } from 'node:child_process';
import { resolve } from 'node:path';

export default function setup(): void {
  execFileSync('make', ['-s', '-C', resolve(import.meta.dirname, '..', '..', 'native'), 'sanitize'], {
    stdio: ['ignore', 'inherit', 'inherit'],
  });
}
