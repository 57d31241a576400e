/**
 * Which build of the native programs the native tests run against.
 *
 * `npm test` runs test/native twice (vitest.config.ts): once against the release build that
 * `npm run build` makes (static, FORTIFY), and once against `make -C native sanitize`
 * (ASan + UBSan, dynamic), chosen by CARAPACE_NATIVE_BUILD=sanitize in that project's
 * environment. A sanitizer report is a failure there: it goes to stderr, which the tests compare,
 * and the program exits 1 instead of with the status the test expects.
 *
 * `buildVariant` compiles a build of its own into a temporary directory, for the tests that need
 * a compile-time setting (a smaller RELAY_HEADER_MAX) or a dynamic program to interpose on.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO } from '../helpers/cli.js';

export type NativeBuild = 'release' | 'sanitize';
export type NativeProgram = 'carapace-init' | 'carapace-pump' | 'carapace';

export const NATIVE_DIR = join(REPO, 'native');

export function nativeBuild(): NativeBuild {
  return process.env.CARAPACE_NATIVE_BUILD === 'sanitize' ? 'sanitize' : 'release';
}

/** The program of the build under test. */
export function nativeProgram(name: NativeProgram): string {
  return nativeBuild() === 'sanitize' ? join(NATIVE_DIR, 'build', 'sanitize', name) : join(NATIVE_DIR, name);
}

const variants = new Map<string, string>();
const variantDirs: string[] = [];
process.on('exit', () => {
  for (const dir of variantDirs) rmSync(dir, { recursive: true, force: true });
});

/**
 * A sanitizer build (ASan + UBSan, dynamic) of one program with extra -D definitions, in a fresh
 * directory any uid can read. Built once per test process and set of definitions.
 */
export function buildVariant(name: NativeProgram, defines: string[] = []): string {
  const key = `${name} ${defines.join(' ')}`;
  const cached = variants.get(key);
  if (cached) return cached;
  const dir = mkdtempSync(join(tmpdir(), 'carapace-native-'));
  variantDirs.push(dir);
  chmodSync(dir, 0o755);
  execFileSync(
    'make',
    [
      '-s',
      '-C',
      NATIVE_DIR,
      `SANITIZE_DIR=${dir}`,
      `EXTRA_CPPFLAGS=${defines.map((d) => `-D${d}`).join(' ')}`,
      join(dir, name),
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  variants.set(key, join(dir, name));
  return join(dir, name);
}
