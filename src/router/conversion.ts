/**
 * Which wire protocol a call speaks to its provider, and how the agent's request and the
 * provider's answer are carried across: passed through when the provider speaks the agent's API,
 * translated through Chat Completions when it does not (translate/). Decided per call from the
 * agent's API and the route's provider type.
 */
import { API_NAMES, PROVIDER_INFO, type Api, type ProviderType } from './providers.js';
import { chatToAnthropic, chatToMessage, messageToChat, messagesToChat } from './translate/anthropic.js';
import { AnthropicToChatStream, ChatToMessagesStream } from './translate/anthropic-stream.js';
import { TranslationError, type ChatChunk, type ChatResponse, type Json } from './translate/chat.js';
import {
  ChatToResponsesStream,
  chatToResponse,
  responsesToChat,
  type OutEvent,
} from './translate/responses.js';
import type { SseEvent } from './wire/sse.js';

export interface StreamConverter {
  push(ev: SseEvent): OutEvent[];
  end(): OutEvent[];
}

export interface Conversion {
  /** The API called on the provider. */
  providerApi: Api;
  /** `responses→chat.completions` and the like; null when passed through. */
  translation: string | null;
  request(body: Json): Json;
  response(provider: Json): Json;
  /** Null when the provider's events pass through as they are. */
  stream(): StreamConverter | null;
}

/** Provider-side decoders into chat chunks. */
interface ChunkSource {
  push(ev: SseEvent): ChatChunk[];
}

function chatChunks(): ChunkSource {
  return {
    push(ev) {
      if (ev.data === '[DONE]' || ev.data === '') return [];
      return [JSON.parse(ev.data) as ChatChunk];
    },
  };
}

function anthropicChunks(model: string): ChunkSource {
  const t = new AnthropicToChatStream(model);
  return { push: (ev) => (ev.data === '' ? [] : t.push(ev.event, JSON.parse(ev.data) as Json)) };
}

const pass = (api: Api): Conversion => ({
  providerApi: api,
  translation: null,
  request: (b) => b,
  response: (b) => b,
  stream: () => null,
});

/**
 * How an agent's call on `api` reaches a provider of `type`; `model` is the model the provider
 * serves (translated answers name it, as a passed-through answer would). Throws TranslationError
 * for an API the provider cannot serve in any form.
 */
export function conversionFor(api: Api, type: ProviderType, model: string, agentRequest: Json): Conversion {
  const speaks = PROVIDER_INFO[type].speaks;
  if (speaks.has(api)) return pass(api);
  const viaAnthropic = speaks.has('messages');
  const label = (to: Api): string => `${API_NAMES[api]}→${API_NAMES[to]}`;
  if (api === 'chat' && viaAnthropic) {
    return {
      providerApi: 'messages',
      translation: label('messages'),
      request: chatToAnthropic,
      response: (m) => messageToChat(m, model) as unknown as Json,
      stream: () => {
        const src = anthropicChunks(model);
        return {
          push: (ev) => src.push(ev).map((c) => ({ data: c as unknown as Json })),
          end: () => [{ data: '[DONE]' }],
        };
      },
    };
  }
  if (api === 'responses' || api === 'messages') {
    const toChat = api === 'responses' ? responsesToChat : messagesToChat;
    const fromChat = (c: ChatResponse): Json =>
      api === 'responses' ? chatToResponse(c, agentRequest, model) : chatToMessage(c, model);
    const target: Api = viaAnthropic ? 'messages' : 'chat';
    return {
      providerApi: target,
      translation: viaAnthropic ? `${API_NAMES[api]}→chat.completions→messages` : label('chat'),
      request: (b) => (viaAnthropic ? chatToAnthropic(toChat(b)) : toChat(b)),
      response: (p) => fromChat(viaAnthropic ? messageToChat(p, model) : (p as unknown as ChatResponse)),
      stream: () => {
        const src = viaAnthropic ? anthropicChunks(model) : chatChunks();
        const out =
          api === 'responses'
            ? new ChatToResponsesStream(agentRequest, model)
            : new ChatToMessagesStream(model);
        return {
          push: (ev) => src.push(ev).flatMap((c) => out.push(c)),
          end: () => out.end(),
        };
      },
    };
  }
  throw new TranslationError(
    `the route's provider (${type}) does not serve ${API_NAMES[api]}; use a route whose provider does`,
  );
}
