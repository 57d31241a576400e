/**
 * Connections the sandbox refused before any proxy saw them, as audit events.
 *
 * carapace-init watches the sandbox's connect() calls (native/connect-watch.c) and reports, on its
 * event fd, each one the kernel will refuse: a TCP port Landlock does not open (neither the relay's
 * nor one of the policy's listen_ports), or an address the network namespace has no route to
 * (anything but loopback). The refusal is the kernel's; this turns the report into an OCSF 4001
 * refusal with a hint, so that a loopback base URL or a program that ignores HTTP_PROXY leaves a
 * trace and a way forward instead of a bare EACCES or ENETUNREACH.
 *
 * Security assumption: the report comes from PID 1, which read the destination from the caller's
 * memory; a hostile agent can make it report a connection it did not make, or hide one (the
 * notifier's TOCTOU), never open one. Events name the address, port and binary only.
 */
import { isIP } from 'node:net';
import type { OcsfEvent } from '../audit/index.js';
import type { InitEvent } from '../sandbox/launch/running-sandbox.js';

type AuditModule = typeof import('../audit/index.js');

/** One `connect` line of the init's event fd (docs/architecture.md, "Event lines"). */
export interface DirectConnect {
  /** The caller's pid (a thread id for a thread) in the sandbox's pid namespace. */
  pid: number;
  /** /proc/<pid>/exe as the sandbox sees it, when it could be read. */
  binary?: string | undefined;
  protocol: 'tcp' | 'udp' | 'other';
  family: 'ipv4' | 'ipv6';
  address: string;
  port: number;
  /** Landlock (a TCP port it does not open) or the network namespace (no route). */
  refusedBy: 'landlock' | 'network';
}

/** The event as a DirectConnect, or null when it is not a well-formed `connect` line. */
export function parseDirectConnect(e: InitEvent): DirectConnect | null {
  if (e.event !== 'connect') return null;
  const { pid, binary, protocol, family, address, port, refused_by: refusedBy } = e;
  if (
    typeof pid !== 'number' ||
    (binary !== undefined && typeof binary !== 'string') ||
    (protocol !== 'tcp' && protocol !== 'udp' && protocol !== 'other') ||
    (family !== 'ipv4' && family !== 'ipv6') ||
    typeof address !== 'string' ||
    isIP(address) === 0 ||
    typeof port !== 'number' ||
    !Number.isInteger(port) ||
    port < 0 ||
    port > 65535 ||
    (refusedBy !== 'landlock' && refusedBy !== 'network')
  ) {
    return null;
  }
  return { pid, binary, protocol, family, address, port, refusedBy };
}

/** 127.0.0.0/8, ::1, their IPv4-mapped forms, and the unspecified addresses (this host: lo). */
function loopback(address: string): boolean {
  const v4 = address.startsWith('::ffff:') ? address.slice(7) : address;
  return v4.startsWith('127.') || v4 === '0.0.0.0' || address === '::1' || address === '::';
}

/** Why it was refused, and what would work instead. */
export function explain(c: DirectConnect): { reason: string; hint: string } {
  const where = `${c.family === 'ipv6' ? `[${c.address}]` : c.address}:${c.port}`;
  if (c.refusedBy === 'landlock' && loopback(c.address)) {
    return {
      reason: `direct ${c.protocol} connection to ${where} refused by Landlock: port ${c.port} is not in the policy's listen_ports`,
      hint:
        `for a server inside the sandbox, add ${c.port} to listen_ports in the policy; ` +
        `a service on the host is reached through the proxy, as host.openshell.internal:${c.port} where the policy allows it`,
    };
  }
  return {
    reason:
      c.refusedBy === 'landlock'
        ? `direct ${c.protocol} connection to ${where} refused by Landlock: it bypasses the proxy`
        : `direct ${c.protocol} connection to ${where} refused: the sandbox has no route but its proxy`,
    hint:
      'send it through the proxy: HTTP_PROXY and HTTPS_PROXY point to it inside the sandbox ' +
      '(a program that ignores them has no other way out)',
  };
}

/** The 4001 refusal for one reported connection. */
export function directConnectEvent(audit: AuditModule, sandbox: string, c: DirectConnect): OcsfEvent {
  const { reason, hint } = explain(c);
  const ev = audit.networkActivity({
    sandbox,
    disposition: 'blocked',
    host: c.address,
    ip: c.address,
    port: c.port,
    actor: { binary: c.binary },
    reason,
  });
  ev.unmapped.hint = hint;
  ev.unmapped.refused_by = c.refusedBy;
  ev.unmapped.protocol = c.protocol;
  ev.unmapped.sandbox_pid = c.pid;
  return ev;
}
