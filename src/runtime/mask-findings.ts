/**
 * A sandbox's mask checks (src/sandbox/mounts/mask-guard.ts) as audit findings, at a pace a reader can
 * follow. Each host rename over a masked name is a check, and a host that changes its users often
 * (120 useradd/userdel made 251 `mask-restored` findings per running sandbox) would bury the trail
 * in them. So, per sandbox and per path, the first restoration is a finding at once, and further
 * ones in the minute after it are counted and said in one finding when the minute is up (with the
 * count since the last one); a path quiet for a minute starts over. Nothing is dropped: what is
 * counted when the sandbox ends is said then (flush).
 *
 * A mask that could not be bound again (`mask-lost`, high) is never held back.
 */
import { finding, type OcsfEvent } from '../audit/index.js';
import type { MaskCheck } from '../sandbox/mounts/mask-guard.js';

/** At most one `mask-restored` finding per path per this long, per sandbox. */
export const RESTORED_EVERY_MS = 60_000;

interface PathWindow {
  /** When the next finding for the path may be made. */
  until: number;
  /** Restorations since its last finding. */
  count: number;
  /** How the last of them was made (masked again, or emptied: carapace-mask.c). */
  emptied: boolean;
}

export class MaskFindings {
  private readonly windows = new Map<string, PathWindow>();
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly sandbox: string,
    private readonly emit: (event: OcsfEvent) => void,
  ) {}

  /** One check's result, from the guard. */
  checked(c: MaskCheck): void {
    const now = Date.now();
    const fresh: [string, PathWindow][] = [];
    const restored = [
      ...c.restored.map((p) => [p, false] as const),
      ...(c.emptied ?? []).map((p) => [p, true] as const),
    ];
    for (const [path, emptied] of restored) {
      const w = this.windows.get(path);
      if (w !== undefined && now < w.until) {
        w.count++;
        w.emptied = emptied;
        continue;
      }
      // A window whose minute is up but whose timer has not run yet: its count goes in this one.
      const opened = { until: now + RESTORED_EVERY_MS, count: (w?.count ?? 0) + 1, emptied };
      this.windows.set(path, opened);
      fresh.push([path, opened]);
    }
    this.restored(fresh);
    for (const [, w] of fresh) w.count = 0;
    this.arm();
    const lost = [
      ...c.failed,
      ...(c.error !== undefined ? [`every mask: ${c.error}`] : []),
      ...(c.unavailable !== undefined
        ? [`every mask: ${c.unavailable}; the guard tries again until it runs`]
        : []),
    ];
    if (lost.length > 0)
      this.emit(
        finding({
          sandbox: this.sandbox,
          kind: 'mask-lost',
          severity: 'high',
          title: `sandbox ${this.sandbox}: a mask the host's rename detached could not be bound again (${lost.join('; ')}); restart the sandbox to mask it`,
          details: { failed: lost },
        }),
      );
  }

  /** Says what is counted and not said yet (the sandbox ended); stops the timer. */
  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.restored([...this.windows].filter(([, w]) => w.count > 0));
    this.windows.clear();
  }

  /** The minute of some paths is up: their counts are said, quiet ones start over. */
  private due(): void {
    this.timer = null;
    const now = Date.now();
    const ready: [string, PathWindow][] = [];
    for (const [path, w] of this.windows) {
      if (now < w.until) continue;
      if (w.count === 0) this.windows.delete(path);
      else {
        ready.push([path, { ...w }]);
        w.count = 0;
        w.until = now + RESTORED_EVERY_MS;
      }
    }
    this.restored(ready);
    this.arm();
  }

  private arm(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.windows.size === 0) return;
    const next = Math.min(...[...this.windows.values()].map((w) => w.until));
    this.timer = setTimeout(() => this.due(), Math.max(0, next - Date.now()));
    // A one-off run ends when its sandbox does, whatever is counted: flush says it then.
    this.timer.unref();
  }

  /** One finding for these paths, each with its count; nothing for none. */
  private restored(paths: [string, PathWindow][]): void {
    const said = paths.filter(([, w]) => w.count > 0);
    if (said.length === 0) return;
    const what = said
      .map(([p, w]) => {
        const times = w.count === 1 ? '' : ` ${w.count} times`;
        const kind = w.emptied ? ' (another kind of file now: masked by an empty one)' : '';
        return `${p}${times}${kind}`;
      })
      .join(', ');
    const counted = said.some(([, w]) => w.count > 1) ? ' since the last finding' : '';
    this.emit(
      finding({
        sandbox: this.sandbox,
        kind: 'mask-restored',
        severity: 'low',
        title: `sandbox ${this.sandbox}: the host replaced ${what}${counted}; masked again`,
        details: {
          restored: said.map(([p]) => p),
          restorations: Object.fromEntries(said.map(([p, w]) => [p, w.count])),
          ...(said.some(([, w]) => w.emptied)
            ? { emptied: said.filter(([, w]) => w.emptied).map(([p]) => p) }
            : {}),
        },
      }),
    );
  }
}
