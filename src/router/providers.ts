/**
 * Providers: where a route's calls go, what wire protocols each type speaks, and how its key is
 * presented. A provider's key lives only on the host side (the gateway's sealed store, or the
 * sandbox's credentials for an inline route); the router puts it on the upstream request and
 * nowhere else (never in a log, an audit event, an error message or a response).
 */
import type { ProviderType } from '../policy/index.js';

export type { ProviderType };

/** The APIs an agent may call on inference.local. */
export type Api = 'chat' | 'completions' | 'responses' | 'embeddings' | 'messages' | 'models';

/** The audit and docs name of each API. */
export const API_NAMES: Record<Api, string> = {
  chat: 'chat.completions',
  completions: 'completions',
  responses: 'responses',
  embeddings: 'embeddings',
  messages: 'messages',
  models: 'models',
};

/** A provider as the router uses it: resolved, with its key (if it needs one). */
export interface ProviderConfig {
  /** The stored provider's name, or `inline:<route>` for a route with its own endpoint. */
  name: string;
  type: ProviderType;
  /** Base URL: for OpenAI-style types it ends before `/chat/completions` (…/v1). */
  baseUrl: string;
  apiKey?: string | undefined;
}

/** Where the router finds providers and credentials (the gateway's store; a run's own maps). */
export interface ProviderDirectory {
  /** The stored provider `name` as the sandbox's owner may use it; null when there is none. */
  named(sandbox: string, name: string): ProviderConfig | null | Promise<ProviderConfig | null>;
  /** The sandbox's credential `name` (an inline route's `credential_env`); undefined when unset. */
  credential(sandbox: string, name: string): string | undefined;
}

interface TypeInfo {
  defaultBaseUrl: string | null;
  speaks: ReadonlySet<Api>;
  /** Local model servers usually run without a key. */
  keyOptional: boolean;
}

const OPENAI_FAMILY: ReadonlySet<Api> = new Set(['chat', 'completions', 'embeddings', 'models']);

export const PROVIDER_INFO: Record<ProviderType, TypeInfo> = {
  openai: {
    defaultBaseUrl: 'https://api.openai.com/v1',
    speaks: new Set(['chat', 'completions', 'responses', 'embeddings', 'models']),
    keyOptional: false,
  },
  anthropic: {
    defaultBaseUrl: 'https://api.anthropic.com',
    speaks: new Set(['messages', 'models']),
    keyOptional: false,
  },
  nvidia: {
    defaultBaseUrl: 'https://integrate.api.nvidia.com/v1',
    speaks: OPENAI_FAMILY,
    keyOptional: false,
  },
  ollama: { defaultBaseUrl: 'http://127.0.0.1:11434/v1', speaks: OPENAI_FAMILY, keyOptional: true },
  vllm: { defaultBaseUrl: 'http://127.0.0.1:8000/v1', speaks: OPENAI_FAMILY, keyOptional: true },
  'openai-compatible': { defaultBaseUrl: null, speaks: OPENAI_FAMILY, keyOptional: true },
};

/** The URL of an API on a provider. */
export function apiUrl(p: ProviderConfig, api: Api): URL {
  const base = p.baseUrl.replace(/\/+$/, '');
  if (p.type === 'anthropic') {
    // Anthropic's documented base has no /v1; accept one given with it.
    const root = base.endsWith('/v1') ? base.slice(0, -3) : base;
    return new URL(`${root}/v1/${api === 'models' ? 'models' : 'messages'}`);
  }
  const path: Record<Api, string> = {
    chat: '/chat/completions',
    completions: '/completions',
    responses: '/responses',
    embeddings: '/embeddings',
    messages: '/messages',
    models: '/models',
  };
  return new URL(base + path[api]);
}

/** The headers that carry the provider's key (none without a key). */
export function authHeaders(p: ProviderConfig): Record<string, string> {
  if (p.apiKey === undefined || p.apiKey === '') return {};
  if (p.type === 'anthropic') return { 'x-api-key': p.apiKey };
  return { authorization: `Bearer ${p.apiKey}` };
}

/** True when a host name or address is this host's loopback (host-local model servers). */
export function isLoopbackUrl(url: URL): boolean {
  const h = url.hostname.replace(/^\[|\]$/g, '');
  return h === 'localhost' || h === '::1' || /^127\./.test(h);
}
