/**
 * The router behind a real egress proxy, driven as an agent drives it: requests to
 * http://inference.local through the sandbox's proxy socket (exactly as the relay delivers them),
 * answered by fake providers on loopback. No sandbox: the tests under test/router/sandbox-*.ts run
 * the same through real sandboxes and the official SDKs.
 */
import http from 'node:http';
import net from 'node:net';
import { MemoryAuditLog, type OcsfEvent } from '../../src/audit/index.js';
import { InferenceRouter, type ProviderConfig, type UsageStore } from '../../src/router/index.js';
import { compile, startRig, type Rig } from '../proxy/harness.js';

export interface RouterRig {
  router: InferenceRouter;
  rig: Rig;
  audit: MemoryAuditLog;
  /** Sets the sandbox's policy (a reload, as the policy watch or the gateway does it). */
  setPolicy(yaml: string): void;
  call(path: string, body?: unknown, headers?: Record<string, string>): Promise<CallResult>;
  inferenceEvents(): OcsfEvent[];
  close(): Promise<void>;
}

export interface CallResult {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  json<T = Record<string, unknown>>(): T;
  /** The SSE events (data parsed as JSON when it is), in order. */
  events(): { event?: string; data: unknown }[];
}

export function policy(inference: string, extra = ''): string {
  return `version: 1\ninference:\n${inference}\n${extra}`;
}

export async function startRouterRig(
  yaml: string,
  opts: {
    providers?: Record<string, ProviderConfig>;
    credentials?: Record<string, string>;
    usage?: UsageStore;
    now?: () => number;
  } = {},
): Promise<RouterRig> {
  const audit = new MemoryAuditLog();
  const router = new InferenceRouter({
    audit,
    usage: opts.usage,
    now: opts.now,
    providers: {
      named: (_sb, name) => opts.providers?.[name] ?? null,
      credential: (_sb, name) => opts.credentials?.[name],
    },
    onError: (err) => {
      throw err;
    },
  });
  const rig = await startRig({ policy: yaml, internalHosts: [router.internalHost], audit });
  return {
    router,
    rig,
    audit,
    setPolicy: (y) => void rig.sb.setGeneration(compile(y)),
    call: (path, body, headers = {}) => callThrough(rig.socketPath, path, body, headers),
    inferenceEvents: () => audit.events.filter((e) => e.class_uid === 6003),
    close: async () => {
      await rig.close();
      await router.close();
    },
  };
}

let srcPort = 41000;

/** One request to http://inference.local through the proxy socket, as the forward proxy sees it. */
export function callThrough(
  socketPath: string,
  path: string,
  body: unknown,
  headers: Record<string, string>,
): Promise<CallResult> {
  return new Promise((resolve, reject) => {
    const req = http.request({
      method: body === undefined ? 'GET' : 'POST',
      path: `http://inference.local${path}`,
      headers: { host: 'inference.local', 'content-type': 'application/json', ...headers },
      createConnection: () => {
        const s = net.connect(socketPath);
        s.write(`PROXY TCP4 127.0.0.1 127.0.0.1 ${srcPort++} 3128\r\n`);
        return s;
      },
    });
    req.on('error', reject);
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          text,
          json: <T>() => JSON.parse(text) as T,
          events: () => parseSse(text),
        });
      });
    });
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

/**
 * A fetch for the official SDKs (`new OpenAI({ fetch })`, `new Anthropic({ fetch })`) that carries
 * each request through the proxy's socket, as the sandbox's relay would; `requests` counts what the
 * SDK sent (its retries included). `onRequest` runs before each request is sent.
 */
export function sdkFetch(
  r: Pick<RouterRig, 'call'>,
  onRequest?: () => void,
): { fetch: typeof fetch; readonly requests: number } {
  let requests = 0;
  const f = async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const url = new URL(input instanceof Request ? input.url : String(input));
    onRequest?.();
    requests++;
    const headers = Object.fromEntries(new Headers(init?.headers).entries());
    const body = typeof init?.body === 'string' ? (JSON.parse(init.body) as unknown) : undefined;
    const res = await r.call(url.pathname, body, headers);
    const out = new Headers();
    for (const [k, v] of Object.entries(res.headers))
      if (v !== undefined) out.set(k, Array.isArray(v) ? v.join(', ') : v);
    return new Response(res.text, { status: res.status, headers: out });
  };
  return {
    fetch: f as typeof fetch,
    get requests() {
      return requests;
    },
  };
}

export function parseSse(text: string): { event?: string; data: unknown }[] {
  return text
    .split('\n\n')
    .filter((b) => b.trim() !== '')
    .map((block) => {
      let event: string | undefined;
      const data: string[] = [];
      for (const line of block.split('\n')) {
        if (line.startsWith('event: ')) event = line.slice(7);
        else if (line.startsWith('data: ')) data.push(line.slice(6));
      }
      const joined = data.join('\n');
      let parsed: unknown = joined;
      try {
        parsed = JSON.parse(joined);
      } catch {
        // [DONE]
      }
      return event === undefined ? { data: parsed } : { event, data: parsed };
    });
}

/** The text of a chat completion stream. */
export function chatStreamText(events: { data: unknown }[]): string {
  return events
    .map((e) => {
      const d = e.data as { choices?: { delta?: { content?: string } }[] };
      return d?.choices?.[0]?.delta?.content ?? '';
    })
    .join('');
}
