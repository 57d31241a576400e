/**
 * Shared files are named by a non-cryptographic key (src/sandbox/keys.ts), so what a file holds is
 * checked before it is used: a file under the right name with other content is replaced, and one
 * that holds what it should is kept, also for a rootless start that cannot read the mode-0 mask.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { sharedFile } from '../../src/sandbox/shared-files.js';

const NOBODY = 65534;

describe('shared files', () => {
  it('replaces a file under the name that holds something else', () => {
    const run = mkdtempSync(join(tmpdir(), 'carapace-shared-'));
    const path = sharedFile(run, 'etc_passwd', 'sandbox:x:1000:1000::/sandbox:/bin/sh\n', 0o644);
    writeFileSync(path, 'root:x:0:0::/root:/bin/sh\n');
    expect(sharedFile(run, 'etc_passwd', 'sandbox:x:1000:1000::/sandbox:/bin/sh\n', 0o644)).toBe(path);
    expect(readFileSync(path, 'utf8')).toBe('sandbox:x:1000:1000::/sandbox:/bin/sh\n');
  });

  it('reads a file it found right again once it changed, even with the same size', async () => {
    const run = mkdtempSync(join(tmpdir(), 'carapace-shared-'));
    const right = 'sandbox:x:1000:1000::/sandbox:/bin/sh\n';
    const path = sharedFile(run, 'etc_passwd', right, 0o644);
    // Past the second after which a file found right is remembered, not read at every start.
    await new Promise((resolve) => setTimeout(resolve, 1100));
    expect(sharedFile(run, 'etc_passwd', right, 0o644)).toBe(path);
    writeFileSync(path, right.replace('sandbox', 'rootbox'));
    expect(sharedFile(run, 'etc_passwd', right, 0o644)).toBe(path);
    expect(readFileSync(path, 'utf8')).toBe(right);
  });

  const root = process.getuid?.() === 0;
  it.skipIf(!root)('keeps the mode-0 mask for a rootless start (it was rewritten at every start)', () => {
    if (!root) console.log('skipped: needs root to run a child as another user');
    const dir = mkdtempSync(join(tmpdir(), 'carapace-shared-rootless-'));
    chmodSync(dir, 0o777);
    const script = `
      import { sharedFile } from ${JSON.stringify(join(import.meta.dirname, '../../dist/src/sandbox/shared-files.js'))};
      import { statSync } from 'node:fs';
      const a = sharedFile(process.argv[1], 'masked', '', 0);
      const first = statSync(a).ino;
      const b = sharedFile(process.argv[1], 'masked', '', 0);
      console.log(JSON.stringify({ same: a === b, kept: statSync(b).ino === first }));`;
    const out = spawnSync(process.execPath, ['--input-type=module', '-e', script, join(dir, 'run')], {
      uid: NOBODY,
      gid: NOBODY,
      encoding: 'utf8',
    });
    expect(out.status, out.stderr).toBe(0);
    expect(JSON.parse(out.stdout)).toEqual({ same: true, kept: true });
    expect(statSync(join(dir, 'run')).uid).toBe(NOBODY);
  });
});
