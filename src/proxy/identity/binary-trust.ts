/**
 * Trust on first use for executables: the first time a binary path takes part in a connection, the
 * sha256 of the file the process is actually running is recorded; a later process claiming the same
 * path with different content is refused.
 *
 * Threat: a binary the policy allows (`/usr/bin/git`) is replaced by other code at the same path (a
 * writable bind mount, a package upgrade racing the agent). Assumptions: the content is read through
 * `/proc/<pid>/exe`, which the kernel resolves to the running image even when the path has been
 * unlinked or renamed over, so the hash is of what runs, not of what the path names now. Hashes are
 * cached per file identity (device, inode, size, mtime, ctime) so a large interpreter is hashed once.
 */
import { createHash } from 'node:crypto';
import { createReadStream, statSync } from 'node:fs';

export type TrustVerdict =
  { ok: true; sha256: string } | { ok: false; reason: string; expected: string; actual: string };

export class BinaryTrust {
  /** path → first-seen sha256 */
  private readonly pinned = new Map<string, string>();
  /** file identity → sha256 */
  private readonly hashes = new Map<string, string>();

  constructor(initial?: Record<string, string>) {
    for (const [p, h] of Object.entries(initial ?? {})) this.pinned.set(p, h);
  }

  /** The recorded pins, for persisting with the sandbox's state. */
  snapshot(): Record<string, string> {
    return Object.fromEntries(this.pinned);
  }

  async check(procDir: string, binary: string): Promise<TrustVerdict> {
    const actual = await this.hashRunning(procDir);
    const expected = this.pinned.get(binary);
    if (expected === undefined) {
      this.pinned.set(binary, actual);
      return { ok: true, sha256: actual };
    }
    if (expected !== actual) {
      return { ok: false, reason: `binary ${binary} changed since first use`, expected, actual };
    }
    return { ok: true, sha256: actual };
  }

  private async hashRunning(procDir: string): Promise<string> {
    const exe = `${procDir}/exe`;
    const st = statSync(exe, { bigint: true });
    const key = `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
    const hit = this.hashes.get(key);
    if (hit) return hit;
    const hash = createHash('sha256');
    for await (const chunk of createReadStream(exe)) hash.update(chunk as Buffer);
    const digest = hash.digest('hex');
    this.hashes.set(key, digest);
    return digest;
  }
}
