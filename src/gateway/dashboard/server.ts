/**
 * The web dashboard: served by the gateway on 127.0.0.1 (a port the kernel picks, started on the
 * first `carapace dashboard`), one page and a small JSON API behind it, live through server-sent
 * events. It shows the caller's sandboxes (forwarded ports as links), the stream of decisions, a
 * chart of requests and denials per sandbox, and pending proposals with approve and reject.
 *
 * Threat: anything else on the host, or a web page in the operator's browser, acting as the
 * operator. Authentication has exactly one path: a random 256-bit token, made per user by
 * `carapace dashboard` (through the API socket, which knows who asks) and printed only to them.
 * - every request carries it: `Authorization: Bearer` (the page's calls), or `?token=` for the
 *   page itself and its event stream (a browser's EventSource cannot set headers); compared in
 *   constant time; anything without it gets 401 and nothing else;
 * - changes (POST) take the header only, never the query: a cross-site form or image cannot
 *   set it (no CSRF), and no CORS header is ever sent, so other origins cannot read answers;
 * - the Host header must be 127.0.0.1 or localhost with this port (no DNS rebinding);
 * - a token acts as the user it was made for, with that user's rights (an admin's sees everyone's);
 *   tokens live in the gateway's memory only: a restarted gateway forgets them, and a user whose
 *   membership changes (out of the groups, into or out of carapace-admin) loses theirs;
 * - the page loads nothing from elsewhere (inline script and style, a CSP that says so).
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { toApiError } from '../api/errors.js';
import type { Caller } from '../api/router.js';
import type { OperatorEvents } from '../operator-events.js';
import type { ProposalService } from '../proposals/proposals.js';
import type { TreeUsage } from '../../sandbox/processes.js';
import type { SandboxLauncher } from '../sandboxes/sandbox-launcher.js';
import type { SandboxService } from '../sandboxes/sandbox-service.js';
import { DASHBOARD_PAGE } from './page.js';

export interface DashboardParts {
  sandboxes: SandboxService;
  /** CPU and memory of running sandboxes (the same readings as term and /metrics). */
  launcher: SandboxLauncher;
  proposals: ProposalService;
  events: OperatorEvents;
  log: (entry: Record<string, unknown>) => void;
}

/** What the page shows of a sandbox's usage (src/sandbox/processes.ts), or null when it is not running. */
function usageOf(u: TreeUsage | null): { cpuSeconds: number; memoryBytes: number } | null {
  return u && { cpuSeconds: u.cpuSeconds, memoryBytes: u.rssBytes };
}

const CSP =
  "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:";

export class Dashboard {
  private server: http.Server | null = null;
  private port = 0;
  /** token → the user it acts as; one token per uid. */
  private readonly tokens = new Map<string, Caller>();
  /** The live event streams, with the caller each serves: ended when its token is. */
  private readonly streams = new Set<{ caller: Caller; socket: Socket }>();

  constructor(private readonly parts: DashboardParts) {}

  /** The dashboard's address and the caller's token (made on first use), starting it if need be. */
  async open(caller: Caller): Promise<{ url: string; port: number; token: string }> {
    if (!this.server) await this.listen();
    let token = [...this.tokens].find(([, c]) => c.uid === caller.uid && c.admin === caller.admin)?.[0];
    if (!token) {
      token = randomBytes(32).toString('base64url');
      this.tokens.set(token, caller);
    }
    return { url: `http://127.0.0.1:${this.port}/?token=${token}`, port: this.port, token };
  }

  /**
   * Keeps the tokens (and live streams) of the gateway's users as they are now, `members` (the
   * group file's): a user who left the groups, or whose admin right changed, loses theirs (a token
   * holds the rights it was made with). Root's stay.
   */
  keepMembers(members: readonly { uid: number; admin: boolean }[]): void {
    const holds = (c: Caller) => c.uid === 0 || members.some((m) => m.uid === c.uid && m.admin === c.admin);
    for (const [token, caller] of this.tokens) if (!holds(caller)) this.tokens.delete(token);
    for (const s of this.streams) if (!holds(s.caller)) s.socket.destroy();
  }

  private async listen(): Promise<void> {
    const server = http.createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        const e = toApiError(err);
        if (e.code === 'INTERNAL')
          this.parts.log({ level: 'error', msg: 'dashboard error', error: String(err) });
        if (!res.headersSent) json(res, e.status, { error: { code: e.code, message: e.message } });
        else res.destroy();
      });
    });
    server.headersTimeout = 10_000;
    server.requestTimeout = 0; // the event stream stays open
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    this.server = server;
    this.port = (server.address() as AddressInfo).port;
    this.parts.log({ level: 'info', msg: 'dashboard listening', address: `127.0.0.1:${this.port}` });
  }

  /** Who a request acts as, or null: the token, from where this request may carry it. */
  private callerOf(req: IncomingMessage, url: URL): Caller | null {
    const auth = req.headers.authorization;
    const header = auth?.startsWith('Bearer ') ? auth.slice(7).trim() : null;
    const given = header ?? (req.method === 'GET' ? url.searchParams.get('token') : null);
    if (!given) return null;
    const a = Buffer.from(given);
    for (const [token, caller] of this.tokens) {
      const b = Buffer.from(token);
      if (a.length === b.length && timingSafeEqual(a, b)) return caller;
    }
    return null;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const host = req.headers.host ?? '';
    if (host !== `127.0.0.1:${this.port}` && host !== `localhost:${this.port}`) {
      return json(res, 421, {
        error: { code: 'WRONG_HOST', message: 'use http://127.0.0.1:PORT as carapace dashboard prints it' },
      });
    }
    const url = new URL(req.url ?? '/', `http://${host}`);
    const caller = this.callerOf(req, url);
    if (!caller) {
      return json(res, 401, {
        error: {
          code: 'UNAUTHENTICATED',
          message: 'a dashboard token is needed: run carapace dashboard and open the address it prints',
        },
      });
    }
    const { sandboxes, launcher, proposals, events } = this.parts;
    const path = url.pathname;
    if (req.method === 'GET' && path === '/') {
      res.writeHead(200, {
        'Content-Type': 'text/html; charset=utf-8',
        'Content-Security-Policy': CSP,
        'Cache-Control': 'no-store',
        'Referrer-Policy': 'no-referrer',
        'X-Frame-Options': 'DENY',
      });
      return void res.end(DASHBOARD_PAGE);
    }
    if (req.method === 'GET' && path === '/api/sandboxes') {
      return json(
        res,
        200,
        sandboxes
          .list(caller, caller.admin)
          .map((r) => ({ ...sandboxes.view(r), usage: usageOf(launcher.usage(r.id)) })),
      );
    }
    if (req.method === 'GET' && path === '/api/proposals') {
      return json(res, 200, proposals.list(caller, 'pending', { all: caller.admin }));
    }
    if (req.method === 'GET' && path === '/api/series') return json(res, 200, events.seriesFor(caller));
    if (req.method === 'GET' && path === '/api/events') return this.stream(req, res, caller);
    const m = /^\/api\/proposals\/(\d+)\/(approve|reject)$/.exec(path);
    if (req.method === 'POST' && m) {
      const id = Number(m[1]);
      if (m[2] === 'approve') return json(res, 200, await proposals.approve(caller, id));
      return json(res, 200, proposals.reject(caller, id));
    }
    return json(res, 404, { error: { code: 'NOT_FOUND', message: `no such dashboard path: ${path}` } });
  }

  /** Server-sent events: every operator event for this caller, until the page goes. */
  private stream(req: IncomingMessage, res: ServerResponse, caller: Caller): void {
    res.writeHead(200, {
      'Content-Type': 'text/event-stream',
      'Cache-Control': 'no-store',
      Connection: 'keep-alive',
    });
    res.write(': live\n\n');
    const detach = this.parts.events.attach(caller, {
      write: (e) => res.write(`data: ${JSON.stringify(e)}\n\n`),
      get buffered() {
        return res.writableLength;
      },
      end: () => req.socket.destroy(),
    });
    const ping = setInterval(() => res.write(': ping\n\n'), 15_000);
    const entry = { caller, socket: req.socket };
    this.streams.add(entry);
    req.socket.once('close', () => {
      clearInterval(ping);
      this.streams.delete(entry);
      detach();
    });
  }

  async close(): Promise<void> {
    const server = this.server;
    if (!server) return;
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
}

function json(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(text),
    'Cache-Control': 'no-store',
  });
  res.end(text);
}
