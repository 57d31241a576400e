/**
 * Host names and host patterns of network endpoints.
 *
 * Accepted: an exact name (`api.github.com`), an IP address, `*.example.com` (exactly one label
 * below example.com) and `**.example.com` (one or more labels below it). Neither wildcard matches
 * the apex `example.com`: that needs its own endpoint, as with TLS certificate wildcards.
 * Rejected, because each grants far more than anyone means to: `*`, `**`, a wildcard directly over a
 * top-level domain (`*.com`, `**.co`), and a wildcard that is not a whole first label
 * (`a*b.example.com`, `api.*.example.com`). Hosts compare case-insensitively and a trailing dot
 * (the DNS root) is ignored, in patterns and in the names the agent asks for.
 */
import { isIP } from 'node:net';

export type HostPattern =
  | { kind: 'exact'; host: string }
  | { kind: 'one-label'; suffix: string }
  | { kind: 'any-depth'; suffix: string };

/** Lower case, no trailing dot, no IPv6 brackets: the form hosts are compared in. */
export function normalizeHost(host: string): string {
  let h = host.trim().toLowerCase();
  if (h.endsWith('.')) h = h.slice(0, -1);
  if (h.startsWith('[') && h.endsWith(']')) h = h.slice(1, -1);
  return h;
}

const LABEL = /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/;

function validName(name: string): string | null {
  if (name.length === 0) return 'is empty';
  if (name.length > 253) return 'is longer than 253 characters';
  for (const label of name.split('.')) {
    if (label.length === 0) return 'has an empty label (two dots in a row, or a leading dot)';
    if (!LABEL.test(label)) {
      return `has an invalid label "${label}" (letters, digits, "-" and "_" only, at most 63, no "-" at either end)`;
    }
  }
  return null;
}

/**
 * Parses an endpoint host, or returns why it is rejected (a message that says how to fix it).
 */
export function parseHostPattern(raw: string): HostPattern | { error: string } {
  const host = normalizeHost(raw);
  if (isIP(host) !== 0) return { kind: 'exact', host };
  if (!host.includes('*')) {
    const why = validName(host);
    return why === null ? { kind: 'exact', host } : { error: `host "${raw}" ${why}` };
  }
  if (host === '*' || host === '**') {
    return {
      error: `host "${raw}" would allow every host; list the hosts, or use a wildcard under a domain such as "*.example.com"`,
    };
  }
  const dot = host.indexOf('.');
  const first = dot < 0 ? host : host.slice(0, dot);
  const suffix = dot < 0 ? '' : host.slice(dot + 1);
  if ((first !== '*' && first !== '**') || suffix.includes('*')) {
    return {
      error:
        `host "${raw}" has a wildcard that is not a whole first label; ` +
        'write "*.example.com" (one label) or "**.example.com" (any depth)',
    };
  }
  if (!suffix.includes('.')) {
    return {
      error: `host "${raw}" puts a wildcard directly over the top-level domain "${suffix}"; name the domain, e.g. "${first}.example.${suffix}"`,
    };
  }
  const why = validName(suffix);
  if (why !== null) return { error: `host "${raw}": the domain after the wildcard ${why}` };
  if (/^\d+$/.test(suffix.slice(suffix.lastIndexOf('.') + 1))) {
    return {
      error: `host "${raw}" puts a wildcard over numbers, which would match IP addresses; list the addresses`,
    };
  }
  return first === '*' ? { kind: 'one-label', suffix } : { kind: 'any-depth', suffix };
}

/** Does `host` (already normalized) match the pattern? Used by explain and tests; the compiler indexes instead. */
export function hostMatches(pattern: HostPattern, host: string): boolean {
  switch (pattern.kind) {
    case 'exact':
      return pattern.host === host;
    case 'one-label': {
      if (!host.endsWith(`.${pattern.suffix}`)) return false;
      const head = host.slice(0, host.length - pattern.suffix.length - 1);
      return head.length > 0 && !head.includes('.');
    }
    case 'any-depth':
      return host.length > pattern.suffix.length + 1 && host.endsWith(`.${pattern.suffix}`);
  }
}
