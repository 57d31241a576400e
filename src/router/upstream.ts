/**
 * Calls to providers: HTTP or HTTPS from the host, with kept-alive connections per origin, TLS
 * trusting what the caller hands in (the proxy's trust: Node's roots, the host's store, the
 * operator's CA file; src/router imports nothing of the proxy's), and two clocks per call — the whole call
 * (`timeout`) and the provider's silence (`idle_timeout`, the wait for the first byte included).
 * The silence clock stops while the router waits for the agent to take what it was sent
 * (backpressure is the agent's slowness, not the provider's).
 *
 * Host-local providers (127.0.0.1, ::1) are reached directly: the router is the host's own
 * process acting for the policy's author, not the agent, so the SSRF guard of the agent's traffic
 * does not apply to it (docs/router.md).
 */
import http from 'node:http';
import https from 'node:https';
import tls from 'node:tls';

export type UpstreamFailure = 'connect' | 'timeout' | 'idle' | 'reset';

export class UpstreamCallError extends Error {
  override name = 'UpstreamCallError';
  constructor(
    readonly kind: UpstreamFailure,
    message: string,
  ) {
    super(message);
  }
}

export interface UpstreamRequest {
  url: URL;
  method: 'GET' | 'POST';
  headers: Record<string, string>;
  body: Buffer | null;
  timeoutMs: number;
  idleTimeoutMs: number;
}

/**
 * The provider's silence clock and the call's clock; expiry aborts the call. Bytes arriving only
 * note the time: the silence timer checks it when it fires and waits on for the rest (re-arming a
 * timer per chunk of a fast stream would cost more than the chunk).
 */
export class CallClock {
  private idle: NodeJS.Timeout | null = null;
  private total: NodeJS.Timeout | null;
  private paused = false;
  private stopped = false;
  private last = performance.now();
  private abort: ((err: UpstreamCallError) => void) | null = null;

  constructor(
    private readonly timeoutMs: number,
    private readonly idleMs: number,
  ) {
    this.total = setTimeout(
      () =>
        this.fire(
          new UpstreamCallError('timeout', `the call took longer than its timeout (${fmt(timeoutMs)})`),
        ),
      timeoutMs,
    );
    this.arm(idleMs);
  }

  onExpire(abort: (err: UpstreamCallError) => void): void {
    this.abort = abort;
  }

  private fire(err: UpstreamCallError): void {
    this.stop();
    this.abort?.(err);
  }

  private arm(ms: number): void {
    this.idle = setTimeout(() => {
      this.idle = null;
      if (this.paused || this.stopped) return;
      const quiet = performance.now() - this.last;
      if (quiet >= this.idleMs)
        this.fire(
          new UpstreamCallError('idle', `the provider sent nothing for ${fmt(this.idleMs)} (idle_timeout)`),
        );
      else this.arm(this.idleMs - quiet);
    }, ms);
  }

  /** Bytes came from the provider (the reader calls this for each chunk it takes). */
  touch(): void {
    this.last = performance.now();
  }

  /** The router waits for the agent: the provider's silence is not the provider's fault. */
  pause(): void {
    this.paused = true;
  }

  resume(): void {
    this.paused = false;
    this.last = performance.now();
    if (this.idle === null && !this.stopped) this.arm(this.idleMs);
  }

  stop(): void {
    this.stopped = true;
    if (this.idle !== null) clearTimeout(this.idle);
    if (this.total !== null) clearTimeout(this.total);
    this.idle = null;
    this.total = null;
  }

  get timeoutMillis(): number {
    return this.timeoutMs;
  }
}

/**
 * Node's agents set TCP keep-alive and a timeout on a socket each time it goes back to the pool:
 * system calls for every call. These keep it alive as it is (the pool's sockets are ours, set up
 * once when made).
 */
class LeanHttpAgent extends http.Agent {
  override keepSocketAlive(socket: import('node:net').Socket): boolean {
    socket.unref();
    return true;
  }
}
class LeanHttpsAgent extends https.Agent {
  override keepSocketAlive(socket: import('node:net').Socket): boolean {
    socket.unref();
    return true;
  }
}

function fmt(ms: number): string {
  return ms % 60_000 === 0 ? `${ms / 60_000}m` : ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}

export interface UpstreamResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: http.IncomingMessage;
  clock: CallClock;
  /** Ends the call now (the agent left, or the router gave up). */
  abort(): void;
}

/** What providers' TLS trusts: a context made on first use (the proxy's UpstreamTrust's). */
export type TrustSource = () => tls.SecureContext;

export class UpstreamClient {
  private readonly httpAgent = new LeanHttpAgent({ keepAlive: true, maxSockets: 256 });
  private httpsPool: https.Agent | null = null;

  /** Without `trust`, Node's own roots only. */
  constructor(private readonly trust?: TrustSource) {}

  /**
   * Made on the first https call. A secure context, not a `ca` list: https.Agent makes its pool's
   * key out of its TLS options, and a list of roots would be turned into a string on every call.
   */
  private get httpsAgent(): https.Agent {
    this.httpsPool ??= new LeanHttpsAgent({
      keepAlive: true,
      maxSockets: 256,
      minVersion: 'TLSv1.2',
      ...(this.trust ? { secureContext: this.trust() } : {}),
    });
    return this.httpsPool;
  }

  /** Sends the request; resolves at the response head (the body streams), rejects before it. */
  send(r: UpstreamRequest): Promise<UpstreamResponse> {
    const clock = new CallClock(r.timeoutMs, r.idleTimeoutMs);
    const secure = r.url.protocol === 'https:';
    const mod = secure ? https : http;
    return new Promise((resolve, reject) => {
      const headers: Record<string, string> = { ...r.headers };
      if (r.body !== null) headers['content-length'] = String(r.body.length);
      const req = mod.request(r.url, {
        method: r.method,
        headers,
        agent: secure ? this.httpsAgent : this.httpAgent,
      });
      let answered = false;
      clock.onExpire((err) => req.destroy(err));
      req.on('error', (err) => {
        clock.stop();
        if (answered) return;
        const kind = err instanceof UpstreamCallError ? err.kind : 'connect';
        reject(
          err instanceof UpstreamCallError
            ? err
            : new UpstreamCallError(
                kind,
                `cannot reach the provider at ${r.url.origin} (${(err as NodeJS.ErrnoException).code ?? err.message})`,
              ),
        );
      });
      req.on('response', (res) => {
        answered = true;
        clock.touch();
        res.on('end', () => clock.stop());
        res.on('close', () => clock.stop());
        res.on('error', () => clock.stop());
        resolve({
          status: res.statusCode ?? 502,
          headers: res.headers,
          body: res,
          clock,
          abort: () => {
            clock.stop();
            req.destroy();
            res.destroy();
          },
        });
      });
      req.end(r.body ?? undefined);
    });
  }

  close(): void {
    this.httpAgent.destroy();
    this.httpsPool?.destroy();
  }
}
