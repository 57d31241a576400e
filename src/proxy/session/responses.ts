/**
 * The answers the proxy itself gives a client: 403 policy denials (the JSON body of DESIGN.md,
 * "Errors and denials"), 400 for malformed requests, 502 when the upstream cannot be reached. Every
 * one closes the connection (`Connection: close`): after a refusal the proxy does not try to find the
 * next request in a stream it has stopped trusting. Bodies never contain request bytes, query strings
 * or secrets: only the canonical host, port, binary and a fixed reason.
 *
 * Text the sandbox controls (an executable's path quoted in a reason) is escaped (printable.ts).
 *
 * A denial's `hint` names only commands and policy fields that exist (`carapace policy explain`,
 * `carapace rules list|approve` (docs/operator.md), `--allow-local` of `carapace run` and of
 * `carapace gateway start`, `host.openshell.internal`, `allowed_ips`, `credentials`): it is read
 * by the agent and by the person who runs it, and a hint that names nothing real wastes both. It
 * names the commands of the one who holds the sandbox (`HeldBy`): a hint naming a run's and a
 * gateway's left each reader to guess which half was theirs (test/proxy/denial-hints.test.ts).
 */
import { STATUS_CODES } from 'node:http';
import { HOST_LOCAL_NAMES } from '../net/address-guard.js';
import { printable } from '../../policy/printable.js';

const HOST_LOCAL_NAME = HOST_LOCAL_NAMES[0];

/**
 * Who holds the sandbox, which decides what a denial's hint tells to do: `run`, a `carapace run`
 * whose policy is a file it watches; `gateway`, a gateway sandbox whose policy is revisions and
 * whose denials become proposals (docs/operator.md).
 */
export type HeldBy = 'run' | 'gateway';

/** What a refusal was about, which decides the hint. */
export type DenialHint =
  | { kind: 'policy' }
  | { kind: 'local'; address: string }
  | { kind: 'private'; address: string }
  | { kind: 'credential'; name: string }
  | { kind: 'cleartext-credential'; name: string }
  | { kind: 'identity' };

export interface Denial {
  host: string;
  port: number;
  binary: string;
  reason: string;
  hint?: DenialHint | undefined;
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

/** A word for a shell command line: quoted unless it is plainly safe. */
function shellWord(s: string): string {
  return /^[A-Za-z0-9_./:@%+=-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

function ipPort(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

export function hintFor(d: Denial, heldBy: HeldBy): string {
  const h = d.hint ?? { kind: 'policy' };
  switch (h.kind) {
    case 'local': {
      const allow = `--allow-local ${ipPort(h.address, d.port)}`;
      return (
        `${h.address} is an address of this host: to reach a service on the host's loopback, name ` +
        `${HOST_LOCAL_NAME}:${d.port} in the policy; or the operator trusts this one upstream with ` +
        (heldBy === 'run'
          ? `${allow} on carapace run`
          : `carapace gateway start ${allow} (after carapace gateway stop; its sandboxes run on)`)
      );
    }
    case 'private':
      return `${h.address} is a private address: list it (or its range) in the endpoint's allowed_ips`;
    case 'credential':
      return `bind the credential to this endpoint in the policy (credentials: [${h.name}])`;
    case 'cleartext-credential':
      return `use https:// (CONNECT): ${h.name} is sent only over TLS to an endpoint the policy reaches over TLS`;
    case 'identity':
      return 'make the connection from one process: the proxy names the caller by the process that holds it';
    case 'policy':
      return heldBy === 'run'
        ? `carapace policy explain POLICY_FILE --host ${shellWord(d.host)} --port ${d.port} ` +
            `--binary ${shellWord(d.binary)} shows which entry decides; an edit of the policy file applies at once when saved`
        : 'this denial is now a proposal for the operator: carapace rules list shows it, ' +
            'carapace rules approve ID allows it (a new policy revision, live)';
  }
}

export function forbidden(d: Denial, heldBy: HeldBy): string {
  return respond(403, 'Forbidden', {
    error: 'policy_denied',
    host: d.host,
    port: d.port,
    binary: printable(d.binary),
    reason: printable(d.reason),
    hint: printable(hintFor(d, heldBy)),
  });
}

export function badRequest(reason: string, status = 400): string {
  return respond(status, STATUS_CODES[status] ?? 'Bad Request', {
    error: 'bad_request',
    reason: printable(reason),
  });
}

export function badGateway(host: string, port: number, reason: string): string {
  return respond(502, 'Bad Gateway', { error: 'upstream_unreachable', host, port, reason });
}

export const CONNECT_ESTABLISHED = 'HTTP/1.1 200 Connection Established\r\n\r\n';
