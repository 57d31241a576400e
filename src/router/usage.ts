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
    };

interface SandboxUsage {
  day: number;
  /** route → hour → counts (this UTC day only). */
  byRoute: Map<string, Map<number, UsageCounts & { local: boolean }>>;
}

export const hourOf = (ms: number): number => Math.floor(ms / 3_600_000);
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

  /** Whether a call may go to `route` under its own budget and the sandbox's. */
  check(
    sandbox: string,
    route: { name: string; local: boolean; budget: InferenceBudget | null },
    sandboxBudget: InferenceBudget | null,
  ): BudgetVerdict {
    const over = (b: InferenceBudget, counts: { hour: UsageCounts; day: UsageCounts }): string | null => {
      const tokens = (c: UsageCounts): number => c.tokensIn + c.tokensOut;
      if (b.requests_per_hour !== undefined && counts.hour.requests >= b.requests_per_hour)
        return `requests_per_hour ${b.requests_per_hour}`;
      if (b.requests_per_day !== undefined && counts.day.requests >= b.requests_per_day)
        return `requests_per_day ${b.requests_per_day}`;
      if (b.tokens_per_hour !== undefined && tokens(counts.hour) >= b.tokens_per_hour)
        return `tokens_per_hour ${b.tokens_per_hour}`;
      if (b.tokens_per_day !== undefined && tokens(counts.day) >= b.tokens_per_day)
        return `tokens_per_day ${b.tokens_per_day}`;
      return null;
    };
    const verdict = (scope: 'route' | 'sandbox', b: InferenceBudget, limit: string): BudgetVerdict => ({
      ok: false,
      scope,
      limit,
      onExhausted: b.on_exhausted ?? 'deny',
      fallback: b.fallback ?? null,
    });
    if (route.budget !== null) {
      const limit = over(route.budget, this.spent(sandbox, route.name));
      if (limit !== null) return verdict('route', route.budget, limit);
    }
    if (sandboxBudget !== null && !route.local) {
      const limit = over(sandboxBudget, this.spent(sandbox, null));
      if (limit !== null) return verdict('sandbox', sandboxBudget, limit);
    }
    return { ok: true };
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
