/**
 * An HTTP/1.1 session between the agent and upstream servers, request by request: forward-proxy
 * requests (absolute-form, any allowed host) or requests inside a CONNECT tunnel (terminated TLS, or
 * plain HTTP through a tunnel). Every request is judged (request-judge.ts) against the current policy
 * generation; bodies stream both ways with backpressure; a `101` for an allowed WebSocket upgrade turns
 * the connection into a raw tunnel that reloads re-judge.
 *
 * Threat: desynchronisation between what we judged and what the upstream executes. Assumptions: the
 * request head is parsed strictly and re-serialised (never forwarded verbatim); the body is forwarded
 * by the framing we parsed; a response is relayed by the framing the upstream declared; after any
 * refusal or framing error the client connection is closed, not resynchronised.
 */
import type { Duplex } from 'node:stream';
import { forwardBodyNow } from '../http/body-forward.js';
import { HttpHeadError } from '../http/http-fields.js';
import { MAX_HEAD_BYTES, type RequestHead, parseRequestHead } from '../http/http-head.js';
import { parseResponseHead } from '../http/http-response.js';
import { type Approval, type Refusal, judgeRequest } from './request-judge.js';
import { guardHint, isHostLocalName } from '../net/address-guard.js';
import { badGateway, badRequest, forbidden } from './responses.js';
import type { ClientConnection, SessionMode } from '../sandbox-context.js';
import { StreamClosedError, StreamReader, writeAll } from '../http/stream-reader.js';
import { UpstreamError, connectChecked, startTls } from '../net/upstream.js';
import { spliceRaw } from './raw-relay.js';
import { type ByteAccount, COST } from '../budget/sandbox-budget.js';
import { internalCaller } from './internal-host.js';

const MAX_RESPONSE_HEAD = 64 * 1024;

export interface UpstreamSlot {
  key: string;
  socket: Duplex;
  reader: StreamReader;
  address: string;
  /** The policy generation under which its address was last checked (allowed_ips, SSRF guard). */
  generation: number;
}

export type SessionEnd = { kind: 'done' } | { kind: 'connect'; head: RequestHead };

function slotKey(host: string, port: number, tls: boolean): string {
  return `${tls ? 's' : 'p'}|${host}|${port}`;
}

export class L7Session {
  private upstream: UpstreamSlot | null;
  /** Bytes this session holds, against the sandbox's buffer budget. */
  private readonly account: ByteAccount;
  private readonly ungateClient: (reopen?: boolean) => void;
  private ungateUpstream: ((reopen?: boolean) => void) | null = null;

  constructor(
    private readonly conn: ClientConnection,
    private readonly client: Duplex,
    private readonly reader: StreamReader,
    private readonly mode: SessionMode,
    initialUpstream: UpstreamSlot | null = null,
  ) {
    this.upstream = initialUpstream;
    this.account = conn.sb.budget.account();
    this.ungateClient = conn.sb.budget.gate(client);
    if (initialUpstream) this.ungateUpstream = conn.sb.budget.gate(initialUpstream.socket);
  }

  /** Serve requests until the client closes, a refusal, or (forward mode) a CONNECT to hand back. */
  async run(firstHead: Buffer | null = null): Promise<SessionEnd> {
    try {
      return await this.serve(firstHead);
    } finally {
      this.ungateClient();
      this.ungateUpstream?.();
      this.account.close();
    }
  }

  private async serve(firstHead: Buffer | null): Promise<SessionEnd> {
    let pending = firstHead;
    try {
      for (;;) {
        let head: RequestHead;
        try {
          // A bare CR or LF, or a head over the limit, is refused while reading: answered and
          // audited like a head the parser refuses.
          const bytes = pending ?? (await this.reader.readHead(MAX_HEAD_BYTES));
          pending = null;
          if (bytes === null) return this.finish();
          head = parseRequestHead(bytes, this.mode.kind === 'tunnel' ? 'tunnel' : 'proxy');
        } catch (err) {
          if (err instanceof HttpHeadError) return await this.refuseMalformed(err);
          throw err;
        }
        if (head.method === 'CONNECT') {
          this.dropUpstream();
          return { kind: 'connect', head };
        }
        // Judging, auditing and forwarding a request is work done for the sandbox.
        const turn = this.conn.sb.budget.spend(COST.request);
        if (turn) await turn;
        const verdict = judgeRequest(this.conn, head, this.mode);
        if (!verdict.ok) return await this.refuse(verdict);
        // Its line is written before anything of the request leaves (batched with this turn's).
        const audited = this.auditApproval(verdict);
        if (audited) await audited;
        // The kept upstream is taken without a turn of the microtask queue; only a new one waits.
        const upstream = this.keptUpstream(verdict) ?? (await this.upstreamFor(verdict));
        if (!upstream) return { kind: 'done' };
        const outcome = await this.exchange(head, verdict, upstream);
        if (outcome === 'upgraded') return { kind: 'done' };
        if (outcome === 'close') return this.finish();
      }
    } catch (err) {
      // A framing error inside a body, a peer that vanished, an upstream that broke mid-response:
      // the stream can no longer be trusted, so both sides are closed. Anything else is a bug.
      if (
        !(err instanceof HttpHeadError) &&
        !(err instanceof StreamClosedError) &&
        !(err instanceof UpstreamError)
      ) {
        if ((err as NodeJS.ErrnoException).code === undefined) this.conn.sb.internalError(err);
      }
      this.client.destroy();
      this.dropUpstream();
      return { kind: 'done' };
    }
  }

  private finish(): SessionEnd {
    this.dropUpstream();
    this.client.end();
    return { kind: 'done' };
  }

  private dropUpstream(): void {
    this.upstream?.socket.destroy();
    this.upstream = null;
    this.ungateUpstream?.();
    this.ungateUpstream = null;
  }

  private async refuseMalformed(err: HttpHeadError): Promise<SessionEnd> {
    const { sb, caller } = this.conn;
    const host = this.mode.kind === 'tunnel' ? this.mode.host.host : '(unknown)';
    const port = this.mode.kind === 'tunnel' ? this.mode.port : 0;
    sb.audit.request({
      disposition: 'blocked',
      method: 'UNKNOWN',
      host,
      port,
      path: '/',
      caller,
      reason: `malformed request: ${err.reason}`,
      generation: sb.current().generation,
      status: err.status,
    });
    await this.answerAndClose(badRequest(err.reason, err.status));
    return { kind: 'done' };
  }

  private async refuse(r: Refusal): Promise<SessionEnd> {
    const { sb, caller } = this.conn;
    const base = {
      host: r.host,
      port: r.port,
      caller,
      policy: r.policy,
      reason: r.reason,
      generation: r.generation,
    };
    if (r.finding)
      sb.audit.finding({
        ...r.finding,
        caller,
        host: r.host,
        port: r.port,
        policy: r.policy,
        reason: r.reason,
      });
    if (r.level === 'connect')
      sb.audit.connect({ ...base, disposition: 'blocked', srcPort: this.conn.srcPort });
    else
      sb.audit.request({ ...base, disposition: 'blocked', method: r.method, path: r.path, status: r.status });
    const body =
      r.status === 403
        ? forbidden(
            { host: r.host, port: r.port, binary: caller.binary, reason: r.reason, hint: r.hint },
            sb.heldBy,
          )
        : badRequest(r.reason);
    await this.answerAndClose(body);
    return { kind: 'done' };
  }

  private auditApproval(a: Approval): Promise<void> | undefined {
    const { sb, caller } = this.conn;
    if (!a.treatment.inspect && a.disposition === 'allowed') return undefined;
    return sb.audit.request({
      disposition: a.disposition,
      method: a.method,
      host: a.host.host,
      port: a.port,
      path: a.path,
      caller,
      policy: a.policy,
      reason: a.reason,
      enforcement: a.enforcement,
      generation: a.generation,
    });
  }

  private async answerAndClose(text: string): Promise<void> {
    this.dropUpstream();
    if (this.client.destroyed || this.client.writableEnded) return;
    await new Promise<void>((resolve) => this.client.end(text, resolve));
  }

  private slotKeyFor(a: Approval): string {
    const tls = this.mode.kind === 'tunnel' && this.mode.tls;
    return a.internal !== null ? `i|${a.host.host}` : slotKey(a.host.host, a.port, tls);
  }

  /** The open upstream, when this request goes to the same place and may use it; else null. */
  private keptUpstream(a: Approval): UpstreamSlot | null {
    const kept = this.upstream;
    if (!kept || kept.key !== this.slotKeyFor(a) || !kept.reader.open) return null;
    // Kept alive from an earlier generation: its address is checked again under this one (a
    // reload may have narrowed allowed_ips), else the request goes out on a new connection,
    // which the guard judges.
    if (kept.generation === a.generation || a.internal !== null) return kept;
    // Loopback is granted only to a host-local name, as when a raw tunnel is judged again.
    const hostLocal = a.treatment.hostLocal && isHostLocalName(a.host.host);
    const { guard } = this.conn.sb;
    if (guard.checkAddress(kept.address, a.port, a.treatment.allowedIps, hostLocal) === null) {
      kept.generation = a.generation;
      return kept;
    }
    return null;
  }

  /** A new upstream for this request (keptUpstream found none to use): connected and checked. */
  private async upstreamFor(a: Approval): Promise<UpstreamSlot | null> {
    const tls = this.mode.kind === 'tunnel' && this.mode.tls;
    const key = this.slotKeyFor(a);
    this.dropUpstream();
    const { sb, caller } = this.conn;
    if (a.internal !== null) {
      // Served inside Carapace: the handler's duplex is the upstream (internal-host.ts).
      const socket = a.internal.open(internalCaller(this.conn, a.host.host));
      this.upstream = {
        key,
        socket,
        reader: new StreamReader(socket),
        address: 'internal',
        generation: a.generation,
      };
      this.ungateUpstream = sb.budget.gate(socket);
      return this.upstream;
    }
    const guarded = await sb.guard.resolve(a.host, a.port, a.treatment.allowedIps, a.treatment.hostLocal);
    const base = {
      host: a.host.host,
      port: a.port,
      caller,
      policy: a.policy,
      generation: a.generation,
      srcPort: this.conn.srcPort,
    };
    if (!guarded.ok && guarded.kind === 'unresolved') {
      // The upstream's failure (as a refused connect), not a denial, but recorded: see tunnel.ts.
      sb.audit.connect({
        ...base,
        disposition: 'allowed',
        reason: `${a.reason ?? 'allowed'}; upstream unreachable: ${guarded.reason}`,
      });
      await this.answerAndClose(badGateway(a.host.host, a.port, guarded.reason));
      return null;
    }
    if (!guarded.ok) {
      sb.audit.connect({ ...base, disposition: 'blocked', reason: guarded.reason, ip: guarded.address });
      await this.answerAndClose(
        forbidden(
          {
            host: a.host.host,
            port: a.port,
            binary: caller.binary,
            reason: guarded.reason,
            hint: guardHint(guarded),
          },
          sb.heldBy,
        ),
      );
      return null;
    }
    try {
      const { socket, address } = await connectChecked(guarded.addresses, a.port);
      if (this.mode.kind === 'forward')
        sb.audit.connect({ ...base, disposition: 'allowed', ip: address.address });
      if (tls) {
        const turn = sb.budget.spend(COST.tlsHandshake);
        if (turn) await turn;
      }
      const s = tls
        ? await startTls(socket, a.host, sb.upstreamTls, { sessions: sb.upstreamSessions, port: a.port })
        : socket;
      this.upstream = {
        key,
        socket: s,
        reader: new StreamReader(s),
        address: address.address,
        generation: a.generation,
      };
      this.ungateUpstream = sb.budget.gate(s);
      return this.upstream;
    } catch (err) {
      const reason = err instanceof UpstreamError ? err.reason : 'upstream connection failed';
      await this.answerAndClose(badGateway(a.host.host, a.port, reason));
      return null;
    }
  }

  /** Send one request and relay its response. */
  private async exchange(
    head: RequestHead,
    a: Approval,
    up: UpstreamSlot,
  ): Promise<'keep' | 'close' | 'upgraded'> {
    // Sent without a promise when the request is whole already (no body, or all of it read).
    let body: Promise<void> | undefined;
    try {
      body = forwardBodyNow(this.reader, up.socket, head.body, a.wire, this.account);
    } catch (err) {
      body = Promise.reject(err);
    }
    // A bad body frame (or a vanished peer) poisons both streams: close them, which also ends the
    // wait for a response below.
    body?.catch(() => {
      this.client.destroy();
      up.socket.destroy();
    });
    let sentAny = false;
    try {
      for (;;) {
        const bytes = await up.reader.readHead(MAX_RESPONSE_HEAD);
        if (bytes === null) throw new UpstreamError('upstream closed before responding');
        const res = parseResponseHead(bytes, head.method);
        sentAny = true;
        if (res.status === 101) {
          if (!a.websocket) throw new UpstreamError('unrequested protocol switch');
          await writeAll(this.client, bytes);
          if (body) await body;
          this.startRawRelay(a, up);
          return 'upgraded';
        }
        if (res.status < 200) {
          await writeAll(this.client, bytes);
          continue;
        }
        const relayed = forwardBodyNow(up.reader, this.client, res.body, bytes, this.account);
        if (relayed) await relayed;
        if (body) await body;
        if (res.close) this.dropUpstream();
        return head.close || res.body.kind === 'close' ? 'close' : 'keep';
      }
    } catch (err) {
      if (!sentAny && !this.client.destroyed) {
        const reason =
          err instanceof UpstreamError || err instanceof HttpHeadError ? err.reason : 'upstream error';
        await this.answerAndClose(badGateway(a.host.host, a.port, reason));
        return 'close';
      }
      throw err;
    }
  }

  private startRawRelay(a: Approval, up: UpstreamSlot): void {
    const clientRest = this.reader.detach();
    const upstreamRest = up.reader.detach();
    this.upstream = null;
    spliceRaw(this.conn, {
      client: this.client,
      upstream: up.socket,
      clientRest,
      upstreamRest,
      host: a.host.host,
      port: a.port,
      address: up.address,
      inspected: a.treatment.inspect,
      generation: up.generation,
    });
  }
}
