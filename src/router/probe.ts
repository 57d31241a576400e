/**
 * `carapace provider test`: one minimal request to a provider (its model list), timed, with what it
 * answered. The key goes in the auth header only; an error the provider sends back is scrubbed of it.
 */
import { apiUrl, authHeaders, type ProviderConfig } from './providers.js';
import { arr, isObject, str, type Json } from './translate/chat.js';
import { UpstreamCallError, UpstreamClient, type TrustSource } from './upstream.js';

export interface ProbeResult {
  ok: boolean;
  status: number | null;
  latencyMs: number;
  models: string[];
  error?: string | undefined;
}

export async function probeProvider(
  p: ProviderConfig,
  opts: { timeoutMs?: number; upstreamTrust?: TrustSource | undefined } = {},
): Promise<ProbeResult> {
  const client = new UpstreamClient(opts.upstreamTrust);
  const started = performance.now();
  const headers: Record<string, string> = {
    accept: 'application/json',
    'user-agent': 'carapace-router',
    ...authHeaders(p),
  };
  if (p.type === 'anthropic') headers['anthropic-version'] = '2023-06-01';
  try {
    const up = await client.send({
      url: apiUrl(p, 'models'),
      method: 'GET',
      headers,
      body: null,
      timeoutMs: opts.timeoutMs ?? 30_000,
      idleTimeoutMs: opts.timeoutMs ?? 30_000,
    });
    const latencyMs = performance.now() - started;
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const c of up.body as AsyncIterable<Buffer>) {
      size += c.length;
      if (size > 8 * 2 ** 20) break;
      chunks.push(c);
    }
    up.abort();
    let text = Buffer.concat(chunks).toString('utf8');
    if (p.apiKey !== undefined && p.apiKey.length >= 8) text = text.split(p.apiKey).join('[redacted]');
    let json: Json = {};
    try {
      const v: unknown = JSON.parse(text);
      if (isObject(v)) json = v;
    } catch {
      // not JSON
    }
    if (up.status >= 400) {
      const e = isObject(json.error) ? json.error : json;
      return {
        ok: false,
        status: up.status,
        latencyMs,
        models: [],
        error: str(e.message) ?? text.slice(0, 200),
      };
    }
    const models = arr(json.data)
      .map((m) => (isObject(m) ? str(m.id) : undefined))
      .filter((m): m is string => m !== undefined);
    return { ok: true, status: up.status, latencyMs, models };
  } catch (err) {
    return {
      ok: false,
      status: null,
      latencyMs: performance.now() - started,
      models: [],
      error: err instanceof UpstreamCallError ? err.message : (err as Error).message,
    };
  } finally {
    client.close();
  }
}
