/**
 * Credential placeholders: the sandbox only ever holds `carapace:cred:NAME`; the proxy puts the real
 * value in its place on the way out, in header values (including inside `Bearer …` and inside the
 * base64 of `Basic …`), the path and the query.
 *
 * Threat: the agent sends a placeholder to a host of its choosing to make the proxy deliver the
 * secret there, or learns the secret from a log. Rules:
 * - a placeholder is replaced ONLY on a request to an endpoint that lists the credential
 *   (`credentials: [NAME]`); a placeholder whose name is not bound to the endpoint, or bound but with
 *   no value configured, refuses the whole request (the caller answers 403 and records a finding with
 *   the NAME only);
 * - in the path and query the value is percent-encoded; in a header a value with CR, LF or NUL is
 *   refused (it would split the header);
 * - a secret never travels in clear text to an endpoint the policy reaches over TLS: when the request
 *   would leave unencrypted (a forward-proxy `http://` request, plain HTTP inside a CONNECT tunnel)
 *   and the endpoint is on port 443 or declares `tls: terminate`/`passthrough`, a bound placeholder
 *   refuses the request (`cleartext`) instead of being substituted;
 * - nothing here logs or returns the value except in the rewritten request.
 * Bodies are not rewritten (they are streamed, never buffered); a placeholder in a body reaches the
 * upstream as the placeholder text.
 */

export const PLACEHOLDER_PREFIX = 'carapace:cred:';
const RAW = /carapace:cred:([A-Za-z_][A-Za-z0-9_]{0,127})/g;
const ENCODED = /carapace(?::|%3[Aa])cred(?::|%3[Aa])([A-Za-z_][A-Za-z0-9_]{0,127})/g;

export interface CredentialScope {
  /** Names the endpoint may receive. */
  bound: readonly string[];
  /** The sandbox's secrets by name. */
  secrets: ReadonlyMap<string, string>;
  /** The request would leave in clear text to an endpoint reached over TLS: substitute nothing. */
  cleartextRefused?: boolean | undefined;
}

export type Substitution =
  | { ok: true; value: string; used: string[] }
  | { ok: false; name: string; problem: 'unbound' | 'unresolved' | 'unsafe' | 'cleartext' };

/** Cheap pre-check: does the text mention a placeholder at all (raw or percent-encoded)? */
export function mentionsPlaceholder(text: string): boolean {
  return text.includes('carapace') && (text.includes(PLACEHOLDER_PREFIX) || /carapace%3[Aa]cred/.test(text));
}

function replaceAll(
  text: string,
  pattern: RegExp,
  scope: CredentialScope,
  encode: (secret: string) => string | null,
): Substitution {
  const used: string[] = [];
  let failure: Substitution | null = null;
  const value = text.replace(pattern, (_m, name: string) => {
    if (failure) return '';
    if (!scope.bound.includes(name)) {
      failure = { ok: false, name, problem: 'unbound' };
      return '';
    }
    if (scope.cleartextRefused) {
      failure = { ok: false, name, problem: 'cleartext' };
      return '';
    }
    const secret = scope.secrets.get(name);
    if (secret === undefined) {
      failure = { ok: false, name, problem: 'unresolved' };
      return '';
    }
    const encoded = encode(secret);
    if (encoded === null) {
      failure = { ok: false, name, problem: 'unsafe' };
      return '';
    }
    used.push(name);
    return encoded;
  });
  return failure ?? { ok: true, value, used };
}

/** Header text is handled as latin1 (one char per byte): a UTF-8 secret goes in as its bytes. */
const headerSafe = (s: string): string | null =>
  /[\r\n\0]/.test(s) ? null : Buffer.from(s, 'utf8').toString('latin1');

/** Replace placeholders in a header value; `Basic <base64>` is decoded, rewritten and re-encoded. */
export function substituteHeader(value: string, scope: CredentialScope): Substitution {
  const basic = /^(Basic[ \t]+)([A-Za-z0-9+/]+={0,2})$/i.exec(value);
  if (basic) {
    const decoded = Buffer.from(basic[2] as string, 'base64').toString('utf8');
    if (mentionsPlaceholder(decoded)) {
      const inner = replaceAll(decoded, RAW, scope, (s) => s);
      if (!inner.ok) return inner;
      return {
        ok: true,
        value: `${basic[1]}${Buffer.from(inner.value, 'utf8').toString('base64')}`,
        used: inner.used,
      };
    }
  }
  if (!mentionsPlaceholder(value)) return { ok: true, value, used: [] };
  return replaceAll(value, RAW, scope, headerSafe);
}

/** Replace placeholders (raw or with `:` percent-encoded) in a path or query; values are percent-encoded. */
export function substituteUrlPart(text: string, scope: CredentialScope): Substitution {
  if (!mentionsPlaceholder(text)) return { ok: true, value: text, used: [] };
  return replaceAll(text, ENCODED, scope, (s) => encodeURIComponent(s));
}
