/**
 * `policy.local`: the policy advisor inside every gateway sandbox, served through the proxy's
 * internal-host port (src/proxy/session/internal-host.ts) as the router serves `inference.local`. The agent
 * can read its current policy and its own recent denials, and submit a proposal with a rationale:
 *
 *   GET  http://policy.local/v1/policy     {"revision": 3, "policy": "<YAML>"}
 *   GET  http://policy.local/v1/denials    its proposals, newest first (what was denied, how often)
 *   POST http://policy.local/v1/proposals  {"host", "port", "method"?, "path"?, "rationale"}
 *
 * Threat: an agent that talks itself into more access. Decisions and assumptions:
 * - it never approves anything: there is no such path here, and a proposal it submits is a
 *   pending proposal like a denial's, which only the operator decides (`carapace rules`);
 * - it is off unless the sandbox's policy enables it, with an endpoint for `policy.local` (port
 *   80 or 443) in `network_policies`, whose `binaries` say which programs may use it; the policy
 *   is read per request, so a live change turns it on or off at the next request;
 * - who asks is the proxy's caller (the sandbox, the binary the kernel names): a submission's
 *   binary is that binary, never a field of the request, and it sees only its own sandbox;
 * - what it reads is what it is subject to anyway: its own policy text (which may name hosts
 *   and credential NAMES, never values) and its own denials (redacted samples);
 * - submissions are bounded: a small body, a rationale of at most 1,000 characters, and at most
 *   SUBMIT_PER_MINUTE per sandbox (429 beyond; proposals are also capped per sandbox).
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import { duplexPair, type Duplex } from 'node:stream';
import type { InternalHost, InternalHostCaller } from '../../proxy/index.js';
import { redactPath } from './proposal-rules.js';
import type { ProposalService } from './proposals.js';
import type { PolicyRevisionStore } from '../store/policy-revisions.js';
import type { SandboxStore } from '../store/sandbox-store.js';

export const POLICY_HOST = 'policy.local';
const SUBMIT_PER_MINUTE = 30;
const MAX_BODY = 16 * 1024;

export interface PolicyLocalParts {
  proposals: ProposalService;
  revisions: PolicyRevisionStore;
  store: SandboxStore;
}

export class PolicyLocal {
  private readonly server: http.Server;
  private readonly callers = new WeakMap<object, InternalHostCaller>();
  private parts: PolicyLocalParts | null = null;
  /** Submissions per sandbox in the current minute. */
  private readonly submitted = new Map<string, { minute: number; count: number }>();

  readonly internalHost: InternalHost;

  constructor() {
    this.server = http.createServer({ requestTimeout: 30_000, keepAliveTimeout: 5_000 }, (req, res) => {
      const caller = this.callers.get(req.socket);
      if (caller === undefined) return void res.destroy();
      this.handle(req, res, caller).catch(() => {
        if (!res.headersSent) send(res, 500, { error: 'internal', message: 'internal error' });
        else res.destroy();
      });
    });
    this.internalHost = {
      names: [POLICY_HOST],
      open: (caller) => {
        const [proxySide, serverSide] = duplexPair();
        this.callers.set(serverSide, caller);
        proxySide.once('close', () => serverSide.destroy());
        serverSide.once('close', () => proxySide.destroy());
        this.server.emit('connection', serverSide);
        return proxySide as Duplex;
      },
    };
  }

  /** The services it answers from, made after the proxy that serves it. */
  bind(parts: PolicyLocalParts): void {
    this.parts = parts;
  }

  private async handle(req: IncomingMessage, res: ServerResponse, caller: InternalHostCaller): Promise<void> {
    const parts = this.parts;
    const rec = parts?.store.get(caller.sandbox);
    if (!parts || !rec) return send(res, 503, { error: 'unavailable', message: 'the gateway is starting' });
    const gen = caller.policy();
    const binary = caller.binary || undefined;
    const decisions = [80, 443].map((port) => gen.decideConnect({ host: POLICY_HOST, port, binary }));
    if (!decisions.some((d) => d.allowed)) {
      return send(res, 403, {
        error: 'policy_advisor_disabled',
        message: `${POLICY_HOST} is off for ${caller.binary || 'this program'} in this sandbox: ${decisions[0]!.reason}`,
        hint: `the operator enables it with an endpoint { host: ${POLICY_HOST}, port: 80 } in network_policies (docs/operator.md)`,
      });
    }
    const path = (req.url ?? '/').split('?')[0];
    if (req.method === 'GET' && path === '/v1/policy') {
      const latest = parts.revisions.get(rec.id);
      return send(res, 200, { revision: latest?.rev ?? null, policy: latest?.text ?? null });
    }
    if (req.method === 'GET' && path === '/v1/denials') {
      const list = parts.proposals
        .list({ uid: rec.ownerUid, admin: false }, 'all', { sandbox: rec.name, owner: rec.ownerUid })
        .slice(0, 100)
        .map((p) => ({
          proposal: p.id,
          status: p.status,
          host: p.host,
          port: p.port,
          binary: p.binary,
          method: p.method,
          path: p.pathPattern,
          samples: p.samples,
          hits: p.hits,
          lastSeen: p.lastSeen,
          rule: p.rule?.summary ?? null,
        }));
      return send(res, 200, { denials: list });
    }
    if (req.method === 'POST' && path === '/v1/proposals') {
      const now = Math.floor(Date.now() / 60_000);
      const used = this.submitted.get(rec.id);
      const count = used?.minute === now ? used.count : 0;
      if (count >= SUBMIT_PER_MINUTE) {
        return send(res, 429, {
          error: 'too_many',
          message: `at most ${SUBMIT_PER_MINUTE} proposals a minute`,
        });
      }
      this.submitted.set(rec.id, { minute: now, count: count + 1 });
      const body = await readJson(req);
      const problem = body === null ? 'the body must be a JSON object' : invalid(body);
      if (problem !== null) return send(res, 400, { error: 'invalid_request', message: problem });
      const b = body as unknown as Submission;
      const request = b.method !== undefined && b.path !== undefined;
      const view = parts.proposals.submit(
        rec.id,
        {
          level: request ? 'request' : 'connect',
          host: b.host.toLowerCase(),
          port: b.port,
          binary: caller.binary,
          ancestors: [],
          method: request ? b.method!.toUpperCase() : undefined,
          path: request ? redactPath(b.path!) : undefined,
        },
        b.rationale,
      );
      if (view === null)
        return send(res, 200, { status: 'allowed', message: 'the policy allows this already' });
      return send(res, 201, {
        proposal: view.id,
        status: view.status,
        rule: view.rule?.summary ?? null,
        message: 'submitted: the operator approves or rejects it (the agent cannot)',
      });
    }
    return send(res, 404, {
      error: 'not_found',
      message: `${POLICY_HOST} serves GET /v1/policy, GET /v1/denials and POST /v1/proposals`,
    });
  }

  close(): void {
    this.server.close();
  }
}

interface Submission {
  host: string;
  port: number;
  method?: string;
  path?: string;
  rationale: string;
}

/** What is wrong with a submission, or null. */
function invalid(b: Record<string, unknown>): string | null {
  for (const k of Object.keys(b)) {
    if (!['host', 'port', 'method', 'path', 'rationale'].includes(k)) return `unknown field "${k}"`;
  }
  if (
    typeof b.host !== 'string' ||
    !/^[a-z0-9]([a-z0-9-]{0,62}\.)*[a-z0-9-]{1,63}$/i.test(b.host) ||
    b.host.length > 253
  )
    return 'host: a host name or IPv4 address (no wildcards)';
  if (typeof b.port !== 'number' || !Number.isInteger(b.port) || b.port < 1 || b.port > 65535)
    return 'port: a number from 1 to 65535';
  if ((b.method === undefined) !== (b.path === undefined)) return 'method and path go together';
  if (b.method !== undefined && (typeof b.method !== 'string' || !/^[A-Za-z]{1,16}$/.test(b.method)))
    return 'method: an HTTP method';
  if (b.path !== undefined && (typeof b.path !== 'string' || !b.path.startsWith('/') || b.path.length > 2048))
    return 'path: starts with "/", at most 2048 characters';
  if (typeof b.rationale !== 'string' || b.rationale.trim() === '' || b.rationale.length > 1000)
    return 'rationale: why the agent needs it, 1 to 1000 characters';
  return null;
}

async function readJson(req: IncomingMessage): Promise<Record<string, unknown> | null> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req as AsyncIterable<Buffer>) {
    size += c.length;
    if (size > MAX_BODY) return null;
    chunks.push(c);
  }
  try {
    const v = JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

function send(res: ServerResponse, status: number, body: object): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}
