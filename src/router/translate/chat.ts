/**
 * OpenAI Chat Completions: the pivot every translation goes through. An agent's Responses or
 * Anthropic request becomes a chat request, and a provider's answer comes back as chat (a response
 * or chunks) before it becomes the agent's format; a protocol both sides speak is passed through
 * untranslated. Only the fields the translations read or write are typed.
 */
import { randomBytes } from 'node:crypto';

export type Json = Record<string, unknown>;

export interface ChatToolCall {
  id: string;
  type: 'function';
  function: { name: string; arguments: string };
}

export interface ChatMessage {
  role: 'system' | 'developer' | 'user' | 'assistant' | 'tool';
  content?: string | Json[] | null;
  tool_calls?: ChatToolCall[];
  tool_call_id?: string;
}

export interface ChatUsage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens?: number;
  prompt_tokens_details?: { cached_tokens?: number };
  completion_tokens_details?: { reasoning_tokens?: number };
}

export interface ChatResponse {
  id: string;
  object: 'chat.completion';
  created: number;
  model: string;
  choices: { index: number; message: ChatMessage & { role: 'assistant' }; finish_reason: string | null }[];
  usage?: ChatUsage;
}

export interface ChunkToolCall {
  index: number;
  id?: string;
  type?: 'function';
  function?: { name?: string; arguments?: string };
}

export interface ChatChunk {
  id: string;
  object: 'chat.completion.chunk';
  created: number;
  model: string;
  choices: {
    index: number;
    delta: {
      role?: string;
      content?: string | null;
      tool_calls?: ChunkToolCall[];
      reasoning_content?: string;
    };
    finish_reason: string | null;
  }[];
  usage?: ChatUsage | null;
}

/** A request the router cannot translate for the route's provider (400, with what to do). */
export class TranslationError extends Error {
  override name = 'TranslationError';
  readonly code = 'TRANSLATION_UNSUPPORTED';
}

export function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function str(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

export function num(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
}

export function arr(v: unknown): unknown[] {
  return Array.isArray(v) ? v : [];
}

export function newId(prefix: string): string {
  return `${prefix}${randomBytes(12).toString('hex')}`;
}

export const nowSeconds = (): number => Math.floor(Date.now() / 1000);

/** The text of chat content (a string, or text parts joined). */
export function contentText(content: unknown): string {
  if (typeof content === 'string') return content;
  return arr(content)
    .map((p) => (isObject(p) ? (str(p.text) ?? '') : ''))
    .join('');
}

/** Copies the sampling parameters both formats share under the same names. */
export function copyFields(from: Json, to: Json, names: readonly string[]): void {
  for (const n of names) if (from[n] !== undefined) to[n] = from[n];
}
