/**
 * A sandbox's mask checks as audit findings (src/runtime/mask-findings.ts): per path, the first
 * restoration at once, the rest of its minute counted into one finding; mask-lost never held back;
 * nothing counted is lost when the sandbox ends. The clock is vitest's (no timed assertion).
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { OcsfEvent } from '../../src/audit/index.js';
import { MaskFindings, RESTORED_EVERY_MS } from '../../src/runtime/mask-findings.js';

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

function findingsOf(events: OcsfEvent[], kind: string) {
  return events
    .filter((e) => (e.finding_info as { uid?: string } | undefined)?.uid === kind)
    .map(
      (e) => e.unmapped as { restored?: string[]; restorations?: Record<string, number>; failed?: string[] },
    );
}

describe('mask-restored findings', () => {
  it('a host that replaces its users 120 times in a minute: one finding per path at once, then one with the count', () => {
    const events: OcsfEvent[] = [];
    const f = new MaskFindings('sb', (e) => events.push(e));
    // useradd/userdel rename passwd, group, shadow and gshadow; each check restores some of them.
    for (let i = 0; i < 120; i++) {
      f.checked({ restored: ['/etc/passwd', '/etc/group'], failed: [] });
      f.checked({ restored: ['/etc/shadow', '/etc/gshadow'], failed: [] });
      vi.advanceTimersByTime(RESTORED_EVERY_MS / 240);
    }
    const first = findingsOf(events, 'mask-restored');
    expect(first.map((d) => d.restored)).toEqual([
      ['/etc/passwd', '/etc/group'],
      ['/etc/shadow', '/etc/gshadow'],
    ]);
    expect(first[0]!.restorations).toEqual({ '/etc/passwd': 1, '/etc/group': 1 });

    // The minute is up: the other 119 of each, in one finding.
    vi.advanceTimersByTime(RESTORED_EVERY_MS);
    const all = findingsOf(events, 'mask-restored');
    expect(all).toHaveLength(3);
    expect(all[2]!.restorations).toEqual({
      '/etc/passwd': 119,
      '/etc/group': 119,
      '/etc/shadow': 119,
      '/etc/gshadow': 119,
    });
    expect(events[2]!.message).toMatch(/\/etc\/passwd 119 times.*since the last finding; masked again/);

    // A quiet minute: the window closes; the next restoration is a finding at once again.
    vi.advanceTimersByTime(RESTORED_EVERY_MS);
    expect(findingsOf(events, 'mask-restored')).toHaveLength(3);
    f.checked({ restored: ['/etc/passwd'], failed: [] });
    expect(findingsOf(events, 'mask-restored').at(-1)!.restorations).toEqual({ '/etc/passwd': 1 });
  });

  it('what is counted when the sandbox ends is said then', () => {
    const events: OcsfEvent[] = [];
    const f = new MaskFindings('sb', (e) => events.push(e));
    f.checked({ restored: ['/etc/hosts'], failed: [] });
    f.checked({ restored: ['/etc/hosts'], failed: [] });
    f.checked({ restored: ['/etc/hosts'], failed: [] });
    f.flush();
    expect(findingsOf(events, 'mask-restored').map((d) => d.restorations)).toEqual([
      { '/etc/hosts': 1 },
      { '/etc/hosts': 2 },
    ]);
    // And nothing after: its timer went with it.
    vi.advanceTimersByTime(10 * RESTORED_EVERY_MS);
    expect(events).toHaveLength(2);
  });

  it('mask-lost is never held back, however often', () => {
    const events: OcsfEvent[] = [];
    const f = new MaskFindings('sb', (e) => events.push(e));
    f.checked({ restored: [], failed: ['/etc/shadow: move_mount: EINVAL'] });
    f.checked({ restored: [], failed: ['/etc/shadow: move_mount: EINVAL'] });
    f.checked({ restored: [], failed: [], unavailable: 'cannot run carapace-mask: spawn EAGAIN' });
    const lost = findingsOf(events, 'mask-lost');
    expect(lost.map((d) => d.failed)).toEqual([
      ['/etc/shadow: move_mount: EINVAL'],
      ['/etc/shadow: move_mount: EINVAL'],
      ['every mask: cannot run carapace-mask: spawn EAGAIN; the guard tries again until it runs'],
    ]);
  });

  it('a name the host made another kind of file is said so', () => {
    const events: OcsfEvent[] = [];
    const f = new MaskFindings('sb', (e) => events.push(e));
    f.checked({ restored: [], emptied: ['/etc/shadow'], failed: [] });
    expect(events[0]!.message).toMatch(
      /the host replaced \/etc\/shadow \(another kind of file now: masked by an empty one\); masked again/,
    );
    expect(findingsOf(events, 'mask-restored')[0]).toMatchObject({ emptied: ['/etc/shadow'] });
  });
});
