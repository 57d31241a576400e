/**
 * Usage and budgets: what each sandbox has spent, per route and per clock hour (UTC), and whether
 * its budgets let the next call through. Budgets are the policy's: a route's own (`routes.X.budget`)
 * counts that route; the sandbox's (`inference.budget`) counts every route that is not `local:
 * true` (a model on this host costs nothing to call). Hours are clock hours, days UTC days.
 *
 * A call counts as a request when it is sent (so a burst of parallel calls cannot outrun a request
 * limit) and its tokens when it ends, so a token budget stops the call after the one that crossed
 * it. Counts live in memory for the current day and are written to the store every couple of
 * seconds and when the router closes (the gateway's SQLite: they survive restarts); a crash loses
 * at most those seconds.
 */
import type { InferenceBudget } from '../policy/index.js';

export interface UsageCounts {
  requests: number;
  tokensIn: number;
  tokensOut: number;
}

export interface UsageRow extends UsageCounts {
  sandbox: string;
  route: string;
  /** Hours since the Unix epoch (UTC clock hour). */
  hour: number;
  local: boolean;
}

export interface UsageStore {
  /** The rows of `sandbox` from `sinceHour` on. */
  load(sandbox: string, sinceHour: number): UsageRow[];
  /** Adds these counts to the stored ones (by sandbox, route and hour). */
  add(rows: readonly UsageRow[]): void;
}

/** A store that lives as long as the process (carapace run). */
export class MemoryUsageStore implements UsageStore {
  private readonly rows = new Map<string, UsageRow>();

  load(sandbox: string, sinceHour: number): UsageRow[] {
    return [...this.rows.values()]
      .filter((r) => r.sandbox === sandbox && r.hour >= sinceHour)
      .map((r) => ({ ...r }));
  }

  add(rows: readonly UsageRow[]): void {
    for (const r of rows) {
      const key = `${r.sandbox}\0${r.route}\0${r.hour}`;
      const cur = this.rows.get(key);
      if (cur === undefined) this.rows.set(key, { ...r });
      else {
        cur.requests += r.requests;
        cur.tokensIn += r.tokensIn;
        cur.tokensOut += r.tokensOut;
        cur.local = r.local;
      }
    }
  }

  all(sandbox?: string): UsageRow[] {
    return [...this.rows.values()].filter((r) => sandbox === undefined || r.sandbox === sandbox);
  }
}

export type BudgetVerdict =
  | { ok: true }
  | {
      ok: false;
      /** Which budget: the route's own or the sandbox's. */
      scope: 'route' | 'sandbox';
      /** The limit that was reached, e.g. `tokens_per_hour 10000`. */
      limit: string;
      onExhausted: 'deny' | 'fallback';
      fallback: string | null;
      /**
       * When every spent limit of this route's budgets has freed (ms since the epoch: the next clock
       * hour or UTC day), or null when one is 0 and never frees.
       */
      freesAt: number | null;
    };

/** The earlier of two times a budget frees (null: never). */
export function earliestFree(a: number | null, b: number | null): number | null {
  if (a === null) return b;
  if (b === null) return a;
  return Math.min(a, b);
}

interface SandboxUsage {
  day: number;
  /** route → hour → counts (this UTC day only). */
  byRoute: Map<string, Map<number, UsageCounts & { local: boolean }>>;
}

const HOUR_MS = 3_600_000;
export const hourOf = (ms: number): number => Math.floor(ms / HOUR_MS);
const dayStartHour = (hour: number): number => hour - (hour % 24);

export class UsageLedger {
  private readonly sandboxes = new Map<string, SandboxUsage>();
  private pending = new Map<string, UsageRow>();
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly store: UsageStore,
    private readonly now: () => number = Date.now,
    flushMs = 2_000,
    private readonly onError: (err: unknown) => void = () => {},
  ) {
    this.timer = setInterval(() => {
      try {
        this.flush();
      } catch (err) {
        this.onError(err); // the counts stay pending for the next try
      }
    }, flushMs);
    this.timer.unref();
  }

  private usage(sandbox: string): SandboxUsage {
    const hour = hourOf(this.now());
    const day = dayStartHour(hour);
    let u = this.sandboxes.get(sandbox);
    if (u === undefined || u.day !== day) {
      u = { day, byRoute: new Map() };
      // What was spent earlier today (before a restart, or before this sandbox's first call here).
      for (const r of this.store.load(sandbox, day)) this.bump(u, r.route, r.hour, r, r.local);
      for (const r of this.pending.values())
        if (r.sandbox === sandbox && r.hour >= day) this.bump(u, r.route, r.hour, r, r.local);
      this.sandboxes.set(sandbox, u);
    }
    return u;
  }

  private bump(u: SandboxUsage, route: string, hour: number, c: UsageCounts, local: boolean): void {
    let hours = u.byRoute.get(route);
    if (hours === undefined) u.byRoute.set(route, (hours = new Map()));
    const cur = hours.get(hour);
    if (cur === undefined)
      hours.set(hour, { requests: c.requests, tokensIn: c.tokensIn, tokensOut: c.tokensOut, local });
    else {
      cur.requests += c.requests;
      cur.tokensIn += c.tokensIn;
      cur.tokensOut += c.tokensOut;
    }
  }

  private add(sandbox: string, route: string, local: boolean, c: UsageCounts): void {
    const hour = hourOf(this.now());
    this.bump(this.usage(sandbox), route, hour, c, local);
    const key = `${sandbox}\0${route}\0${hour}`;
    const p = this.pending.get(key);
    if (p === undefined) this.pending.set(key, { sandbox, route, hour, local, ...c });
    else {
      p.requests += c.requests;
      p.tokensIn += c.tokensIn;
      p.tokensOut += c.tokensOut;
    }
  }

  /** A call was sent on `route`. */
  begin(sandbox: string, route: string, local: boolean): void {
    this.add(sandbox, route, local, { requests: 1, tokensIn: 0, tokensOut: 0 });
  }

  /** A call on `route` ended, having used these tokens. */
  finish(sandbox: string, route: string, local: boolean, tokensIn: number, tokensOut: number): void {
    if (tokensIn === 0 && tokensOut === 0) return;
    this.add(sandbox, route, local, { requests: 0, tokensIn, tokensOut });
  }

  /** Counts this hour and today, of one route, or (route null) of every route that is not local. */
  spent(sandbox: string, route: string | null): { hour: UsageCounts; day: UsageCounts } {
    const u = this.usage(sandbox);
    const now = hourOf(this.now());
    const hour = { requests: 0, tokensIn: 0, tokensOut: 0 };
    const day = { requests: 0, tokensIn: 0, tokensOut: 0 };
    for (const [name, hours] of u.byRoute) {
      if (route !== null && name !== route) continue;
      for (const [h, c] of hours) {
        if (route === null && c.local) continue;
        for (const t of h === now ? [hour, day] : [day]) {
          t.requests += c.requests;
          t.tokensIn += c.tokensIn;
          t.tokensOut += c.tokensOut;
        }
      }
    }
    return { hour, day };
  }

  /**
   * Whether a call may go to `route` under its own budget and the sandbox's; when not, the first
   * limit spent (in the order the policy lists them, the route's budget first) and when the call
   * could go through again: once every spent limit's window has turned over.
   */
  check(
    sandbox: string,
    route: { name: string; local: boolean; budget: InferenceBudget | null },
    sandboxBudget: InferenceBudget | null,
  ): BudgetVerdict {
    const hour = hourOf(this.now());
    const turnsOver = { hour: (hour + 1) * HOUR_MS, day: (dayStartHour(hour) + 24) * HOUR_MS };
    const tokens = (c: UsageCounts): number => c.tokensIn + c.tokensOut;
    const applicable: ['route' | 'sandbox', InferenceBudget, { hour: UsageCounts; day: UsageCounts }][] = [];
    if (route.budget !== null) applicable.push(['route', route.budget, this.spent(sandbox, route.name)]);
    if (sandboxBudget !== null && !route.local)
      applicable.push(['sandbox', sandboxBudget, this.spent(sandbox, null)]);
    let first: Extract<BudgetVerdict, { ok: false }> | null = null;
    let freesAt: number | null = 0;
    for (const [scope, b, counts] of applicable) {
      const limits: [string, number | undefined, number, 'hour' | 'day'][] = [
        ['requests_per_hour', b.requests_per_hour, counts.hour.requests, 'hour'],
        ['requests_per_day', b.requests_per_day, counts.day.requests, 'day'],
        ['tokens_per_hour', b.tokens_per_hour, tokens(counts.hour), 'hour'],
        ['tokens_per_day', b.tokens_per_day, tokens(counts.day), 'day'],
      ];
      for (const [name, limit, used, window] of limits) {
        if (limit === undefined || used < limit) continue;
        first ??= {
          ok: false,
          scope,
          limit: `${name} ${limit}`,
          onExhausted: b.on_exhausted ?? 'deny',
          fallback: b.fallback ?? null,
          freesAt: null,
        };
        // A limit of 0 lets nothing through in any window.
        freesAt = freesAt === null || limit === 0 ? null : Math.max(freesAt, turnsOver[window]);
      }
    }
    return first === null ? { ok: true } : { ...first, freesAt };
  }

  /** Writes what is pending to the store. */
  flush(): void {
    if (this.pending.size === 0) return;
    const rows = [...this.pending.values()];
    this.pending = new Map();
    try {
      this.store.add(rows);
    } catch (err) {
      // Kept for the next try: counts are never dropped because a write failed once.
      for (const r of rows) {
        const key = `${r.sandbox}\0${r.route}\0${r.hour}`;
        const p = this.pending.get(key);
        if (p === undefined) this.pending.set(key, r);
        else {
          p.requests += r.requests;
          p.tokensIn += r.tokensIn;
          p.tokensOut += r.tokensOut;
        }
      }
      throw err;
    }
  }

  /** Forgets a sandbox's in-memory counts (it was deleted); the store keeps or drops its rows. */
  forget(sandbox: string): void {
    this.sandboxes.delete(sandbox);
    for (const [k, r] of this.pending) if (r.sandbox === sandbox) this.pending.delete(k);
  }

  close(): void {
    clearInterval(this.timer);
    this.flush();
  }
}
