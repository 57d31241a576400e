/**
 * What the sandbox's root shows (docs/sandbox.md, "The filesystem"): what the policy lists, the
 * host's root-level symlinks whose target it shows, and nothing else; `ls /` lists it without
 * granting anything beneath.
 */
import { lstatSync, readdirSync, readlinkSync } from 'node:fs';
import { posix } from 'node:path';
import { describe, expect, it } from 'vitest';
import { requires } from '../helpers/premises.js';
import { policyFile, pySyscall, runInSandbox } from '../helpers/sandbox.js';

const POLICY = (readOnly: string) => `version: 1
filesystem_policy:
  read_only: [${readOnly}]
  read_write: [/sandbox, /tmp]
`;

/** The host's root-level symlinks, name → target (read at start, like the sandbox does). */
function hostRootLinks(): Map<string, string> {
  const links = new Map<string, string>();
  for (const name of readdirSync('/')) {
    if (lstatSync(`/${name}`).isSymbolicLink()) links.set(name, readlinkSync(`/${name}`));
  }
  return links;
}

describe('the root of the sandbox', () => {
  it('ls / lists what exists; nothing beneath it becomes readable', () => {
    const r = runInSandbox(
      pySyscall(
        [
          'print(sorted(os.listdir("/")))',
          // Listed, but not granted: the init's own binary (bound by Carapace, in no Landlock rule).
          'print(sorted(os.listdir("/.carapace")))',
          'attempt(lambda: open("/.carapace/init", "rb").read(1))',
        ].join('\n'),
      ),
    );
    expect(r.stderr).toBe('');
    const [root, carapace, read] = r.stdout.trim().split('\n');
    expect(root).toContain("'sandbox'");
    expect(root).toContain("'usr'");
    expect(root).not.toContain("'root'");
    expect(root).not.toContain("'home'");
    expect(carapace).toContain("'init'");
    expect(read).toBe('EACCES');
  });

  it("mirrors the host's root-level symlinks whose target is visible, and only those", (ctx) => {
    requires(ctx, 'merged-usr');
    const links = hostRootLinks();
    // /usr/sbin is not listed: /sbin (→ usr/sbin) leads nowhere visible and is left out.
    const listed = ['/usr/bin', '/usr/lib', '/usr/lib64', '/etc'];
    const policy = policyFile(POLICY(listed.join(', ')));
    const names = [...links.keys()];
    const r = runInSandbox(
      pySyscall(`for n in ${JSON.stringify(names)}: print(n, os.path.lexists("/" + n))`),
      ['--policy', policy],
    );
    expect(r.stderr).toBe('');
    const expected = names.map((name) => {
      const to = posix.resolve('/', links.get(name)!);
      const visible = listed.some((v) => v === to || v.startsWith(to + '/') || to.startsWith(v + '/'));
      return `${name} ${visible ? 'True' : 'False'}`;
    });
    expect(r.stdout.trim().split('\n')).toEqual(expected);
    expect(expected).toContain('bin True');
    expect(expected).toContain('sbin False');
  });

  it('a mirrored symlink grants nothing: Landlock and the mounts judge where it leads', (ctx) => {
    requires(ctx, 'merged-usr');
    // /bin → usr/bin is mirrored (it leads to the listed /usr/bin/env), but /usr/bin holds env alone.
    const policy = policyFile(POLICY('/usr/bin/env, /usr/lib, /usr/lib64, /etc'));
    const env = runInSandbox(['/bin/env'], ['--policy', policy]);
    expect(env.status).toBe(0);
    const python = runInSandbox(['/bin/python3', '-c', '1'], ['--policy', policy]);
    expect(python.status).toBe(127);
  });
});
