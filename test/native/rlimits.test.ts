/** Resource limits carapace-init sets on the agent, as the agent sees them. */
import { describe, expect, it } from 'vitest';
import { events, python, runSandbox, USUAL_PATHS } from './harness.js';

describe('rlimits', () => {
  it('sets RLIMIT_CORE 0 and the given NOFILE and NPROC, soft and hard', async () => {
    const r = await runSandbox({
      init: [...USUAL_PATHS, '--nofile', '256', '--nproc', '40'],
      command: ['cat', '/proc/self/limits'],
    });
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^Max core file size\s+0\s+0\s+bytes\s*$/m);
    expect(r.stdout).toMatch(/^Max open files\s+256\s+256\s+files\s*$/m);
    expect(r.stdout).toMatch(/^Max processes\s+40\s+40\s+processes\s*$/m);
    expect(events(r, 'rlimits')[0]).toEqual({ event: 'rlimits', core: 0, nofile: 256, nproc: 40 });
  });

  it('enforces NPROC: the agent cannot fork past it', async () => {
    const script = `
import os, time
children = []
try:
    for _ in range(20):
        pid = os.fork()
        if pid == 0:
            time.sleep(5)
            os._exit(0)
        children.append(pid)
    print('forked all')
except OSError as e:
    print('stopped after', len(children), 'errno', e.errno)
for pid in children:
    os.kill(pid, 9)
`;
    const r = await runSandbox({ init: [...USUAL_PATHS, '--nproc', '5'], command: python(script) });
    // PID 1 and the agent count too: three more processes fit under 5.
    expect(r.stdout).toBe('stopped after 3 errno 11\n');
  });

  it('enforces NOFILE, and the agent cannot raise it', async () => {
    const script = `
import os, resource
fds = []
try:
    while True:
        fds.append(os.open('/dev/null', os.O_RDONLY))
except OSError as e:
    print('open failed at', len(fds) + 3, 'errno', e.errno)
try:
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 1024))
except (OSError, ValueError) as e:
    print('raise refused')
`;
    const r = await runSandbox({ init: [...USUAL_PATHS, '--nofile', '32'], command: python(script) });
    expect(r.stdout).toBe('open failed at 32 errno 24\nraise refused\n');
  });
});
