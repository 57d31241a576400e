/**
 * Anthropic Messages ↔ Chat Completions, both ways: an agent that speaks Messages (Claude Code, the
 * Anthropic SDK) on a route whose provider speaks chat, and an agent that speaks chat on a route to
 * Anthropic. Text, images, tools (definitions, tool_use, tool_result), tool_choice, stop
 * sequences, limits and streaming translate; extended thinking is dropped (chat has no standard
 * form of it); server tools (web search, code execution, computer use) and documents are refused
 * with 400, never silently dropped.
 *
 * This file carries requests and whole answers; anthropic-stream.ts carries streams, event by event.
 */
import {
  TranslationError,
  arr,
  contentText,
  copyFields,
  isObject,
  newId,
  nowSeconds,
  num,
  str,
  type ChatMessage,
  type ChatResponse,
  type ChatToolCall,
  type ChatUsage,
  type Json,
} from './chat.js';

export const STOP_TO_FINISH: Record<string, string> = {
  end_turn: 'stop',
  stop_sequence: 'stop',
  max_tokens: 'length',
  tool_use: 'tool_calls',
  refusal: 'content_filter',
  pause_turn: 'stop',
};
export const FINISH_TO_STOP: Record<string, string> = {
  stop: 'end_turn',
  length: 'max_tokens',
  tool_calls: 'tool_use',
  function_call: 'tool_use',
  content_filter: 'refusal',
};

/** Anthropic's `max_tokens` is required; a chat request may leave it out. */
const DEFAULT_MAX_TOKENS = 8192;

function parseArgs(args: string): unknown {
  try {
    const v: unknown = JSON.parse(args === '' ? '{}' : args);
    return isObject(v) ? v : { value: v };
  } catch {
    return { arguments: args };
  }
}

// ------------------------------------------------------------------- agent speaks Messages → chat

function blocksToChatContent(blocks: Json[]): string | Json[] {
  const parts: Json[] = [];
  for (const b of blocks) {
    if (b.type === 'text') parts.push({ type: 'text', text: str(b.text) ?? '' });
    else if (b.type === 'image' && isObject(b.source)) {
      const src = b.source;
      const url =
        src.type === 'base64' ? `data:${String(src.media_type)};base64,${String(src.data)}` : str(src.url);
      if (url === undefined) throw new TranslationError('an image source must be base64 or a URL');
      parts.push({ type: 'image_url', image_url: { url } });
    } else if (b.type === 'document') {
      throw new TranslationError('document blocks need a provider that speaks the Anthropic Messages API');
    }
  }
  return parts.every((p) => p.type === 'text') ? parts.map((p) => p.text).join('') : parts;
}

function toolResultText(content: unknown): string {
  return typeof content === 'string'
    ? content
    : contentText(arr(content).filter((b) => isObject(b) && b.type === 'text'));
}

/** An Anthropic Messages request as a chat request for the same model. */
export function messagesToChat(req: Json): Json {
  const messages: ChatMessage[] = [];
  const system = typeof req.system === 'string' ? req.system : contentText(req.system);
  if (system !== '') messages.push({ role: 'system', content: system });
  for (const m of arr(req.messages)) {
    if (!isObject(m)) continue;
    const role = m.role === 'assistant' ? 'assistant' : 'user';
    if (typeof m.content === 'string') {
      messages.push({ role, content: m.content });
      continue;
    }
    const blocks = arr(m.content).filter(isObject);
    if (role === 'assistant') {
      const text = blocks
        .filter((b) => b.type === 'text')
        .map((b) => str(b.text) ?? '')
        .join('');
      const calls: ChatToolCall[] = blocks
        .filter((b) => b.type === 'tool_use')
        .map((b) => ({
          id: str(b.id) ?? newId('toolu_'),
          type: 'function',
          function: { name: str(b.name) ?? '', arguments: JSON.stringify(b.input ?? {}) },
        }));
      const msg: ChatMessage = { role: 'assistant', content: text === '' && calls.length > 0 ? null : text };
      if (calls.length > 0) msg.tool_calls = calls;
      messages.push(msg);
      continue;
    }
    // Tool results answer the previous assistant turn's calls: they come first, as tool messages.
    for (const b of blocks.filter((x) => x.type === 'tool_result')) {
      const text = toolResultText(b.content);
      messages.push({
        role: 'tool',
        tool_call_id: str(b.tool_use_id) ?? '',
        content: b.is_error === true ? `Error: ${text}` : text,
      });
    }
    const rest = blocks.filter((b) => b.type !== 'tool_result');
    if (rest.length > 0) messages.push({ role: 'user', content: blocksToChatContent(rest) });
  }
  const chat: Json = { model: req.model, messages };
  const tools: Json[] = [];
  for (const t of arr(req.tools)) {
    if (!isObject(t)) continue;
    if (t.type !== undefined && t.type !== 'custom')
      throw new TranslationError(
        `tool type "${String(t.type)}" is an Anthropic server tool; the route's provider does not serve it`,
      );
    const fn: Json = { name: t.name, parameters: t.input_schema ?? { type: 'object', properties: {} } };
    if (t.description !== undefined) fn.description = t.description;
    tools.push({ type: 'function', function: fn });
  }
  if (tools.length > 0) chat.tools = tools;
  const tc = req.tool_choice;
  if (isObject(tc)) {
    if (tc.type === 'auto') chat.tool_choice = 'auto';
    else if (tc.type === 'any') chat.tool_choice = 'required';
    else if (tc.type === 'none') chat.tool_choice = 'none';
    else if (tc.type === 'tool') chat.tool_choice = { type: 'function', function: { name: tc.name } };
    if (tc.disable_parallel_tool_use === true && tools.length > 0) chat.parallel_tool_calls = false;
  }
  copyFields(req, chat, ['temperature', 'top_p', 'stream', 'max_tokens']);
  if (Array.isArray(req.stop_sequences) && req.stop_sequences.length > 0) chat.stop = req.stop_sequences;
  if (isObject(req.metadata) && typeof req.metadata.user_id === 'string') chat.user = req.metadata.user_id;
  if (chat.stream === true) chat.stream_options = { include_usage: true };
  return chat;
}

export function anthropicUsage(u: ChatUsage | null | undefined): Json {
  return { input_tokens: u?.prompt_tokens ?? 0, output_tokens: u?.completion_tokens ?? 0 };
}

/** A chat response as the Anthropic message the agent asked for. */
export function chatToMessage(chat: ChatResponse, agentModel: string): Json {
  const choice = chat.choices?.[0];
  const content: Json[] = [];
  const text = choice ? contentText(choice.message?.content) : '';
  if (text !== '') content.push({ type: 'text', text });
  for (const call of choice?.message?.tool_calls ?? [])
    content.push({
      type: 'tool_use',
      id: call.id,
      name: call.function.name,
      input: parseArgs(call.function.arguments),
    });
  return {
    id: newId('msg_'),
    type: 'message',
    role: 'assistant',
    model: agentModel,
    content,
    stop_reason: FINISH_TO_STOP[choice?.finish_reason ?? 'stop'] ?? 'end_turn',
    stop_sequence: null,
    usage: anthropicUsage(chat.usage),
  };
}

// ---------------------------------------------------------------- agent speaks chat → Anthropic

function chatContentToBlocks(content: unknown): Json[] {
  if (typeof content === 'string') return content === '' ? [] : [{ type: 'text', text: content }];
  const blocks: Json[] = [];
  for (const p of arr(content)) {
    if (!isObject(p)) continue;
    if (p.type === 'text') blocks.push({ type: 'text', text: str(p.text) ?? '' });
    else if (p.type === 'image_url') {
      const url = isObject(p.image_url) ? str(p.image_url.url) : str(p.image_url);
      if (url === undefined) continue;
      const m = /^data:([^;,]+);base64,(.*)$/s.exec(url);
      blocks.push(
        m
          ? { type: 'image', source: { type: 'base64', media_type: m[1], data: m[2] } }
          : { type: 'image', source: { type: 'url', url } },
      );
    }
  }
  return blocks;
}

/** A chat request as an Anthropic Messages request for the same model. */
export function chatToAnthropic(req: Json): Json {
  const system: string[] = [];
  const messages: { role: 'user' | 'assistant'; content: Json[] }[] = [];
  const add = (role: 'user' | 'assistant', blocks: Json[]): void => {
    const last = messages[messages.length - 1];
    // Consecutive turns of one role are one turn (tool results after a call, several user parts).
    if (last !== undefined && last.role === role) last.content.push(...blocks);
    else messages.push({ role, content: blocks });
  };
  for (const m of arr(req.messages)) {
    if (!isObject(m)) continue;
    const role = str(m.role);
    if (role === 'system' || role === 'developer') system.push(contentText(m.content));
    else if (role === 'assistant') {
      const blocks = chatContentToBlocks(m.content);
      for (const c of arr(m.tool_calls)) {
        if (!isObject(c) || !isObject(c.function)) continue;
        blocks.push({
          type: 'tool_use',
          id: str(c.id) ?? newId('toolu_'),
          name: str(c.function.name) ?? '',
          input: parseArgs(str(c.function.arguments) ?? '{}'),
        });
      }
      add('assistant', blocks);
    } else if (role === 'tool') {
      add('user', [
        { type: 'tool_result', tool_use_id: str(m.tool_call_id) ?? '', content: contentText(m.content) },
      ]);
    } else add('user', chatContentToBlocks(m.content));
  }
  const out: Json = {
    model: req.model,
    messages,
    max_tokens: num(req.max_completion_tokens) ?? num(req.max_tokens) ?? DEFAULT_MAX_TOKENS,
  };
  if (system.length > 0) out.system = system.join('\n\n');
  const tools = arr(req.tools)
    .filter(isObject)
    .map((t) => {
      if (t.type !== 'function' || !isObject(t.function))
        throw new TranslationError(`tool type "${String(t.type)}" cannot be sent to Anthropic`);
      const tool: Json = {
        name: t.function.name,
        input_schema: t.function.parameters ?? { type: 'object', properties: {} },
      };
      if (t.function.description !== undefined) tool.description = t.function.description;
      return tool;
    });
  if (tools.length > 0) out.tools = tools;
  const tc = req.tool_choice;
  let choice: Json | null = null;
  if (tc === 'auto') choice = { type: 'auto' };
  else if (tc === 'required') choice = { type: 'any' };
  else if (tc === 'none') choice = { type: 'none' };
  else if (isObject(tc) && isObject(tc.function)) choice = { type: 'tool', name: tc.function.name };
  if (req.parallel_tool_calls === false && tools.length > 0)
    choice = { ...(choice ?? { type: 'auto' }), disable_parallel_tool_use: true };
  if (choice !== null && tools.length > 0) out.tool_choice = choice;
  const rf = req.response_format;
  if (isObject(rf) && rf.type !== 'text')
    throw new TranslationError(
      'response_format is not available on an Anthropic route; ask for JSON in the prompt',
    );
  const t = num(req.temperature);
  if (t !== undefined) out.temperature = Math.min(1, t); // chat's range is 0–2, Anthropic's 0–1
  copyFields(req, out, ['top_p', 'stream']);
  const stop = req.stop;
  if (typeof stop === 'string') out.stop_sequences = [stop];
  else if (Array.isArray(stop) && stop.length > 0) out.stop_sequences = stop;
  if (typeof req.user === 'string') out.metadata = { user_id: req.user };
  return out;
}

export function usageFromAnthropic(u: unknown): ChatUsage {
  const o = isObject(u) ? u : {};
  const input =
    (num(o.input_tokens) ?? 0) +
    (num(o.cache_read_input_tokens) ?? 0) +
    (num(o.cache_creation_input_tokens) ?? 0);
  const output = num(o.output_tokens) ?? 0;
  return {
    prompt_tokens: input,
    completion_tokens: output,
    total_tokens: input + output,
    prompt_tokens_details: { cached_tokens: num(o.cache_read_input_tokens) ?? 0 },
  };
}

/** An Anthropic message as the chat response the agent asked for. */
export function messageToChat(msg: Json, agentModel: string): ChatResponse {
  const blocks = arr(msg.content).filter(isObject);
  const text = blocks
    .filter((b) => b.type === 'text')
    .map((b) => str(b.text) ?? '')
    .join('');
  const calls: ChatToolCall[] = blocks
    .filter((b) => b.type === 'tool_use')
    .map((b) => ({
      id: str(b.id) ?? newId('call_'),
      type: 'function',
      function: { name: str(b.name) ?? '', arguments: JSON.stringify(b.input ?? {}) },
    }));
  const message: ChatResponse['choices'][number]['message'] = {
    role: 'assistant',
    content: text === '' && calls.length > 0 ? null : text,
  };
  if (calls.length > 0) message.tool_calls = calls;
  return {
    id: newId('chatcmpl-'),
    object: 'chat.completion',
    created: nowSeconds(),
    model: agentModel,
    choices: [{ index: 0, message, finish_reason: STOP_TO_FINISH[str(msg.stop_reason) ?? ''] ?? 'stop' }],
    usage: usageFromAnthropic(msg.usage),
  };
}
