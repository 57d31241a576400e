/**
 * The proxy's audit vocabulary on top of src/audit: every event carries the sandbox, the caller
 * (pid, binary), host, port, policy entry, reason and generation. Security assumption: callers pass
 * canonical hosts, canonical paths (no query) and credential NAMES only; nothing here accepts a
 * query string, a header value or a secret. Reasons and titles are text for people and may quote
 * what the sandbox controls (an executable's path, an SNI): they are made printable here
 * (printable.ts), once for every event; the structured fields keep exact values.
 */
import { printable } from '../policy/printable.js';
import {
  emitAhead,
  type AuditSink,
  type Disposition,
  finding,
  httpActivity,
  networkActivity,
  networkClose,
} from '../audit/index.js';

export type ProxyFindingKind =
  | 'sni-mismatch'
  | 'sni-missing'
  | 'unbound-credential'
  | 'unresolved-credential'
  | 'cleartext-credential'
  | 'ambiguous-identity'
  | 'binary-replaced'
  | 'bad-relay-header'
  | 'host-mismatch';

export interface CallerRef {
  pid?: number | undefined;
  binary?: string | undefined;
  ancestors?: readonly string[] | undefined;
}

export interface DecisionBase {
  host: string;
  port: number;
  caller: CallerRef;
  policy?: string | undefined;
  reason?: string | undefined;
  enforcement?: 'enforce' | 'audit' | undefined;
  generation?: number | undefined;
}

/** The refusals a sandbox's audit counts (the proxy's counters for /metrics). */
export interface DenialCounts {
  deniedConnections: number;
  deniedRequests: number;
}

export class ProxyAudit {
  constructor(
    private readonly sink: AuditSink,
    readonly sandbox: string,
    private readonly denials: DenialCounts = { deniedConnections: 0, deniedRequests: 0 },
  ) {}

  connect(
    e: DecisionBase & { disposition: Disposition; ip?: string | undefined; srcPort?: number | undefined },
  ): void {
    if (e.disposition === 'blocked') this.denials.deniedConnections++;
    this.sink.emit(
      networkActivity({
        sandbox: this.sandbox,
        disposition: e.disposition,
        host: e.host,
        port: e.port,
        ip: e.ip,
        srcPort: e.srcPort,
        actor: e.caller,
        policy: e.policy,
        reason: text(e.reason),
        enforcement: e.enforcement,
        generation: e.generation,
      }),
    );
  }

  closed(e: DecisionBase): void {
    this.sink.emit(
      networkClose({
        sandbox: this.sandbox,
        disposition: 'blocked',
        host: e.host,
        port: e.port,
        actor: e.caller,
        policy: e.policy,
        reason: text(e.reason),
        generation: e.generation,
      }),
    );
  }

  /**
   * A request's decision. Returns a promise (where the sink batches its writes: AuditSink.emitAhead)
   * that the caller awaits before the request goes on: the line is written first either way.
   */
  request(
    e: DecisionBase & { disposition: Disposition; method: string; path: string; status?: number },
  ): Promise<void> | undefined {
    const event = httpActivity({
      sandbox: this.sandbox,
      disposition: e.disposition,
      method: e.method,
      host: e.host,
      port: e.port,
      path: e.path,
      actor: e.caller,
      policy: e.policy,
      reason: text(e.reason),
      enforcement: e.enforcement,
      generation: e.generation,
      status: e.status,
    });
    // A refusal is on disk before the agent hears of it: written now, by itself.
    if (e.disposition === 'blocked') {
      this.denials.deniedRequests++;
      this.sink.emit(event);
      return undefined;
    }
    return emitAhead(this.sink, event);
  }

  finding(e: {
    kind: ProxyFindingKind;
    title: string;
    caller: CallerRef;
    host?: string | undefined;
    port?: number | undefined;
    policy?: string | undefined;
    reason?: string | undefined;
    details?: Record<string, unknown>;
  }): void {
    this.sink.emit(
      finding({
        sandbox: this.sandbox,
        kind: e.kind,
        title: printable(e.title),
        host: e.host,
        port: e.port,
        actor: e.caller,
        policy: e.policy,
        reason: text(e.reason),
        severity: 'high',
        details: e.details ?? {},
      }),
    );
  }
}

function text(s: string | undefined): string | undefined {
  return s === undefined ? undefined : printable(s);
}
