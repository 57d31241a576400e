/**
 * The answers the proxy itself gives a client: 403 policy denials (the JSON body of DESIGN.md,
 * "Errors and denials"), 400 for malformed requests, 502 when the upstream cannot be reached. Every
 * one closes the connection (`Connection: close`): after a refusal the proxy does not try to find the
 * next request in a stream it has stopped trusting. Bodies never contain request bytes, query strings
 * or secrets: only the canonical host, port, binary and a fixed reason.
 */
import { STATUS_CODES } from 'node:http';

export interface Denial {
  host: string;
  port: number;
  binary: string;
  reason: string;
  sandbox: string;
}

function respond(status: number, text: string, body: object): string {
  const json = JSON.stringify(body);
  return (
    `HTTP/1.1 ${status} ${text}\r\n` +
    'Content-Type: application/json\r\n' +
    `Content-Length: ${Buffer.byteLength(json)}\r\n` +
    'Connection: close\r\n' +
    'Cache-Control: no-store\r\n' +
    '\r\n' +
    json
  );
}

export function forbidden(d: Denial): string {
  return respond(403, 'Forbidden', {
    error: 'policy_denied',
    host: d.host,
    port: d.port,
    binary: d.binary,
    reason: d.reason,
    hint: `carapace rules pending ${d.sandbox}`,
  });
}

export function badRequest(reason: string, status = 400): string {
  return respond(status, STATUS_CODES[status] ?? 'Bad Request', { error: 'bad_request', reason });
}

export function badGateway(host: string, port: number, reason: string): string {
  return respond(502, 'Bad Gateway', { error: 'upstream_unreachable', host, port, reason });
}

export const CONNECT_ESTABLISHED = 'HTTP/1.1 200 Connection Established\r\n\r\n';
