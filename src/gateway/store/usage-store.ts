/**
 * Inference usage in the gateway's SQLite (the router's UsageStore): counts per sandbox, route and
 * clock hour, added to in batches by the router's ledger. Rows go with their sandbox (ON DELETE
 * CASCADE); counts for a sandbox deleted meanwhile are dropped, not retried.
 */
import type { UsageRow, UsageStore } from '../../router/index.js';
import type { Database } from './database.js';

interface Row {
  sandbox_id: string;
  route: string;
  hour: number;
  local: number;
  requests: number;
  tokens_in: number;
  tokens_out: number;
}

const fromRow = (r: Row): UsageRow => ({
  sandbox: r.sandbox_id,
  route: r.route,
  hour: Number(r.hour),
  local: Number(r.local) === 1,
  requests: Number(r.requests),
  tokensIn: Number(r.tokens_in),
  tokensOut: Number(r.tokens_out),
});

export class SqliteUsageStore implements UsageStore {
  constructor(private readonly db: Database) {}

  load(sandbox: string, sinceHour: number): UsageRow[] {
    return (
      this.db
        .sql('SELECT * FROM inference_usage WHERE sandbox_id = ? AND hour >= ? ORDER BY route, hour')
        .all(sandbox, sinceHour) as unknown as Row[]
    ).map(fromRow);
  }

  add(rows: readonly UsageRow[]): void {
    this.db.transaction(() => {
      for (const r of rows) {
        this.db
          .sql(
            `INSERT INTO inference_usage (sandbox_id, route, hour, local, requests, tokens_in, tokens_out)
             SELECT ?, ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM sandboxes WHERE id = ?)
             ON CONFLICT (sandbox_id, route, hour) DO UPDATE SET
               local = excluded.local,
               requests = requests + excluded.requests,
               tokens_in = tokens_in + excluded.tokens_in,
               tokens_out = tokens_out + excluded.tokens_out`,
          )
          .run(r.sandbox, r.route, r.hour, r.local ? 1 : 0, r.requests, r.tokensIn, r.tokensOut, r.sandbox);
      }
    });
  }

  /** Totals per route of a sandbox: this hour, today (UTC), and since it was created. */
  summary(
    sandbox: string,
    nowHour: number,
  ): { route: string; local: boolean; hour: Counts; day: Counts; total: Counts }[] {
    const day = nowHour - (nowHour % 24);
    const out = new Map<
      string,
      { route: string; local: boolean; hour: Counts; day: Counts; total: Counts }
    >();
    for (const r of (
      this.db
        .sql('SELECT * FROM inference_usage WHERE sandbox_id = ? ORDER BY route, hour')
        .all(sandbox) as unknown as Row[]
    ).map(fromRow)) {
      let e = out.get(r.route);
      if (e === undefined)
        out.set(r.route, (e = { route: r.route, local: r.local, hour: zero(), day: zero(), total: zero() }));
      e.local = r.local;
      add(e.total, r);
      if (r.hour >= day) add(e.day, r);
      if (r.hour === nowHour) add(e.hour, r);
    }
    return [...out.values()];
  }
}

export interface Counts {
  requests: number;
  tokensIn: number;
  tokensOut: number;
}

const zero = (): Counts => ({ requests: 0, tokensIn: 0, tokensOut: 0 });
function add(to: Counts, r: Counts): void {
  to.requests += r.requests;
  to.tokensIn += r.tokensIn;
  to.tokensOut += r.tokensOut;
}
