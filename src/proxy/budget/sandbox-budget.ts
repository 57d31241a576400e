/**
 * What the proxy may spend on one sandbox: bytes held in this process, and CPU work.
 *
 * Threat: one proxy serves every sandbox (a gateway), so a sandbox that makes the proxy buffer or
 * compute for it takes memory and time from all the others and from the host: thousands of tunnels
 * whose replies it never reads (each would hold up to a megabyte here), TLS handshakes replayed as
 * fast as it can open connections, requests by the thousand. Its own cgroup limits do not see any of
 * it: the work happens in the proxy. Rules:
 * - bytes: every byte read from one side and not yet handed to the kernel on the other is held
 *   against the sandbox's `bufferBytes`. Above it, every read of every socket of that sandbox stops
 *   at the handle (read-gate.ts) until what it holds falls to half; the sandbox's own transfers slow
 *   down, nobody else's do. Each connection keeps its own account, released whole when it closes;
 * - work: a token bucket in microseconds of proxy CPU, refilled at `workMicrosPerSecond` up to
 *   `workBurstMicros`. A new connection (caller lookup), a TLS handshake (two per terminated tunnel), an
 *   inspected request and every relayed byte cost tokens (COST, measured by bench/proxy-flood.ts).
 *   Discrete operations wait for their tokens (the connection just waits: it is slowed, never
 *   refused); relayed bytes may take the bucket below zero, and then the sandbox's reads stop
 *   until it is back above zero;
 * - connections: at most `maxConnections` at once (egress-proxy.ts closes the rest).
 * Defaults come from the sandbox's own limits (budgetsFor): the proxy spends on a sandbox about
 * what the sandbox may spend itself. Nothing here reads or sleeps on the event loop: waits are
 * timers, and gates only stop and start reads.
 */
import type { Duplex } from 'node:stream';
import { type ReadGate, readGate } from './read-gate.js';

export interface ProxyBudgets {
  /** Bytes the proxy may hold for the sandbox (read from one side, not yet written to the other). */
  bufferBytes: number;
  /** Proxy CPU the sandbox may use, in microseconds per second (the bucket's refill; Infinity: none). */
  workMicrosPerSecond: number;
  /** The bucket's size: how much work may happen at once after a quiet spell, in microseconds. */
  workBurstMicros: number;
  /** Connections open at once; more are closed as they come. */
  maxConnections: number;
}

/** The sandbox limits the defaults are derived from (`resolveLimits` of src/policy). */
export interface BudgetLimits {
  memoryBytes?: number | undefined;
  cpuMillis?: number | undefined;
}

/**
 * What each kind of work costs the proxy, in microseconds of its CPU: measured on the development
 * machine (two cores of a Xeon), 16 clients at once, warmed up (a raw tunnel 0.41 ms, a TLS
 * termination 2.9 ms at full speed and 4 ms while its sandbox waits for tokens, a request 0.09 ms),
 * rounded up (docs/proxy.md, "Budgets"). Bytes are relayed bytes, through Node (a bulk
 * tunnel's pump is not counted here: it runs in the sandbox's own cgroups).
 */
export const COST = {
  /** A connection: relay header, caller lookup, decision, audit, upstream connect, teardown. */
  connection: 400,
  /** One TLS handshake (a terminated tunnel has two: with the upstream and with the agent). */
  tlsHandshake: 1800,
  /** One inspected request: parse, judge, audit, rebuild the head. */
  request: 100,
  /** Relayed bytes per microsecond. */
  bytesPerMicro: 2048,
} as const;

/**
 * What one open connection costs this process besides the bytes it holds: its sockets, their
 * streams, the tunnel's state, and its share of the heap's own growth (measured by
 * bench/proxy-flood.ts: 35–46 KiB of RSS per unread tunnel; counted as 64 KiB). With bufferBytes it
 * bounds what a sandbox can grow the proxy by.
 */
export const PER_CONNECTION_BYTES = 64 * 1024;

/**
 * About what one open connection costs the kernel on the proxy's side: its upstream socket's
 * receive queue, which fills to the socket's buffer when the proxy stops reading (the host's
 * `net.ipv4.tcp_rmem` default, 128 KiB; 97–124 KiB measured per unread tunnel; a socket the kernel
 * tuned up while data flowed fast can hold more, up to the sysctl's maximum).
 */
export const PER_CONNECTION_KERNEL_BYTES = 128 * 1024;

const MiB = 1024 * 1024;
const clamp = (v: number, lo: number, hi: number): number => Math.min(hi, Math.max(lo, v));

/**
 * The budgets for a sandbox with these limits: bufferBytes an eighth of its memory (2–64 MiB; 64 MiB
 * without a limit), one connection per 256 KiB of memory (64–1,024; each costs this process up to
 * 64 KiB and the kernel about a socket's receive buffer, 128 KiB by default, for its upstream
 * socket, so the sum stays under the sandbox's own memory limit), and as much proxy CPU per
 * second as the sandbox may use itself (at least 10 ms/s), with a burst of one second's worth (at
 * least 100 ms). A sandbox without a cpu limit may use the host's CPU as it likes, and the proxy's
 * as well: its work is not limited (only its buffers and connections are). `overrides` win field
 * by field.
 */
export function budgetsFor(limits: BudgetLimits = {}, overrides: Partial<ProxyBudgets> = {}): ProxyBudgets {
  const memory = limits.memoryBytes;
  const cpu = limits.cpuMillis;
  const work = cpu === undefined ? Infinity : Math.max(10_000, cpu * 1000);
  const derived: ProxyBudgets = {
    bufferBytes: memory === undefined ? 64 * MiB : clamp(Math.floor(memory / 8), 2 * MiB, 64 * MiB),
    maxConnections: memory === undefined ? 1024 : clamp(Math.floor(memory / (256 * 1024)), 64, 1024),
    workMicrosPerSecond: work,
    workBurstMicros: Math.max(100_000, work),
  };
  return { ...derived, ...definedOnly(overrides) };
}

function definedOnly(o: Partial<ProxyBudgets>): Partial<ProxyBudgets> {
  const out: Partial<ProxyBudgets> = {};
  for (const [k, v] of Object.entries(o) as [keyof ProxyBudgets, number | undefined][]) {
    if (v !== undefined) out[k] = v;
  }
  return out;
}

/** Bytes one connection holds, released whole when it closes (a lost write callback cannot leak). */
export interface ByteAccount {
  /** `n` bytes were read and are on their way out: held until released, and their relay's work. */
  hold(n: number): void;
  release(n: number): void;
  close(): void;
}

/** What a sandbox's budget looks like now (for tests, metrics and the bench). */
export interface BudgetStats {
  heldBytes: number;
  /** Most bytes held at once since attach. */
  peakHeldBytes: number;
  workTokens: number;
  /** Operations that waited for work tokens. */
  waits: number;
  /** Operations waiting now. */
  waiting: number;
  /** Times the sandbox's reads were stopped for its buffer or its work budget. */
  throttles: number;
  /** Reads are stopped right now. */
  throttled: boolean;
}

export class SandboxBudget {
  private held = 0;
  private peak = 0;
  private tokens: number;
  private refilled = performance.now();
  /** Every socket whose reads the budget stops, with how many users registered it. */
  private readonly gates = new Map<Duplex, { gate: ReadGate; users: number }>();
  private overBuffer = false;
  private inDebt = false;
  private debtTimer: NodeJS.Timeout | null = null;
  private readonly queue: { cost: number; go: () => void }[] = [];
  private queueTimer: NodeJS.Timeout | null = null;
  private waits = 0;
  private throttles = 0;

  constructor(readonly budgets: ProxyBudgets) {
    this.tokens = budgets.workBurstMicros;
  }

  get stats(): BudgetStats {
    this.refill();
    return {
      heldBytes: this.held,
      peakHeldBytes: this.peak,
      workTokens: Math.floor(this.tokens),
      waits: this.waits,
      waiting: this.queue.length,
      throttles: this.throttles,
      throttled: this.overBuffer || this.inDebt,
    };
  }

  /**
   * Puts a socket's reads under the budget (closed at once while the sandbox is throttled). Returns
   * the function that takes them out again: `reopen` false leaves the reads as they are (a socket
   * handed to the pump, whose reads must stay stopped).
   */
  gate(stream: Duplex): (reopen?: boolean) => void {
    let entry = this.gates.get(stream);
    if (entry === undefined) {
      entry = { gate: readGate(stream), users: 0 };
      this.gates.set(stream, entry);
      // A socket that closes leaves the budget whatever its users forgot.
      stream.once('close', () => this.gates.delete(stream));
      if (this.overBuffer || this.inDebt) entry.gate.close();
    }
    entry.users++;
    const mine = entry;
    let done = false;
    return (reopen = true) => {
      if (done) return;
      done = true;
      if (--mine.users > 0) return;
      this.gates.delete(stream);
      if (reopen) mine.gate.open();
    };
  }

  account(): ByteAccount {
    let mine = 0;
    let open = true;
    return {
      hold: (n) => {
        if (!open) return;
        mine += n;
        this.hold(n);
        this.consume(n / COST.bytesPerMicro);
      },
      release: (n) => {
        const r = Math.min(n, mine);
        if (r <= 0) return;
        mine -= r;
        this.release(r);
      },
      close: () => {
        open = false;
        if (mine > 0) this.release(mine);
        mine = 0;
      },
    };
  }

  /**
   * Take `cost` microseconds of work: undefined when the tokens are there, else a promise that
   * resolves when they are (in order of asking).
   */
  spend(cost: number): Promise<void> | undefined {
    this.refill();
    // A cost above the bucket's size is served when the bucket is full.
    cost = Math.min(cost, this.budgets.workBurstMicros);
    if (this.queue.length === 0 && this.tokens >= cost) {
      this.tokens -= cost;
      return undefined;
    }
    this.waits++;
    return new Promise<void>((go) => {
      this.queue.push({ cost, go });
      this.schedule();
    });
  }

  /** Work that has already happened (relayed bytes): may take the bucket below zero. */
  consume(cost: number): void {
    this.tokens -= cost;
    if (this.tokens < 0 && !this.inDebt) {
      this.refill();
      if (this.tokens >= 0) return;
      this.inDebt = true;
      this.throttle();
      const ms = Math.ceil((-this.tokens / this.budgets.workMicrosPerSecond) * 1000);
      this.debtTimer = setTimeout(() => this.payDebt(), ms);
      this.debtTimer.unref();
    }
  }

  /** Stops timers (the sandbox is detached). */
  close(): void {
    if (this.debtTimer) clearTimeout(this.debtTimer);
    if (this.queueTimer) clearTimeout(this.queueTimer);
    for (const w of this.queue.splice(0)) w.go();
  }

  private hold(n: number): void {
    this.held += n;
    if (this.held > this.peak) this.peak = this.held;
    if (!this.overBuffer && this.held > this.budgets.bufferBytes) {
      this.overBuffer = true;
      this.throttle();
    }
  }

  private release(n: number): void {
    this.held -= n;
    if (this.overBuffer && this.held <= this.budgets.bufferBytes / 2) {
      this.overBuffer = false;
      this.unthrottle();
    }
  }

  private refill(): void {
    const now = performance.now();
    const add = ((now - this.refilled) / 1000) * this.budgets.workMicrosPerSecond;
    this.refilled = now;
    this.tokens = Math.min(this.budgets.workBurstMicros, this.tokens + add);
  }

  private payDebt(): void {
    this.debtTimer = null;
    this.refill();
    if (this.tokens < 0) {
      const ms = Math.ceil((-this.tokens / this.budgets.workMicrosPerSecond) * 1000);
      this.debtTimer = setTimeout(() => this.payDebt(), ms);
      this.debtTimer.unref();
      return;
    }
    this.inDebt = false;
    this.unthrottle();
    this.schedule();
  }

  /** Serve waiting operations whose tokens are there; set a timer for the next one. */
  private schedule(): void {
    if (this.queueTimer) return;
    this.refill();
    while (this.queue.length > 0) {
      const head = this.queue[0] as { cost: number; go: () => void };
      if (this.tokens < head.cost) break;
      this.tokens -= head.cost;
      this.queue.shift();
      head.go();
    }
    const head = this.queue[0];
    if (head === undefined) return;
    const ms = Math.max(1, Math.ceil(((head.cost - this.tokens) / this.budgets.workMicrosPerSecond) * 1000));
    this.queueTimer = setTimeout(() => {
      this.queueTimer = null;
      this.schedule();
    }, ms);
  }

  private throttle(): void {
    this.throttles++;
    for (const { gate } of this.gates.values()) gate.close();
  }

  private unthrottle(): void {
    if (this.overBuffer || this.inDebt) return;
    for (const { gate } of this.gates.values()) gate.open();
  }
}
