/**
 * What the onboarding tests share: the premise that the npm registry answers (agent images are
 * installed from it), a scripted model that runs shell tool calls when asked, and the onboard
 * command run as a real process against a fresh CARAPACE_HOME.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { carapaceAsync, freshHome, type CliResult } from '../helpers/cli.js';
import type { ScriptedReply } from '../helpers/fake-providers.js';

/** Extra CAs for the registry's TLS where the host reaches it through its own CA (as here). */
export const UPSTREAM_CA = existsSync('/etc/ssl/certs/ca-certificates.crt')
  ? ['--upstream-ca', '/etc/ssl/certs/ca-certificates.crt']
  : [];

let registry: string | null | undefined;
/** null when the npm registry answers; else why not (the tests that install agents skip). */
export function registryUnreachable(): string | null {
  if (registry !== undefined) return registry;
  const r = spawnSync('npm', ['ping', '--fetch-retries=0'], { encoding: 'utf8', timeout: 30_000 });
  registry =
    r.status === 0
      ? null
      : `the npm registry does not answer (npm ping: ${(r.stderr || r.stdout).trim().split('\n')[0]})`;
  return registry;
}

export function onboardHome(): string {
  const home = freshHome();
  chmodSync(home, 0o711); // sandbox uids traverse it to their workspaces
  return home;
}

/** Runs the CLI without blocking this process's event loop (the scripted model lives in it). */
export async function cli(
  home: string,
  args: string[],
  env: NodeJS.ProcessEnv = {},
  timeoutMs = 600_000,
): Promise<CliResult> {
  return carapaceAsync(args, { home, env, timeoutMs }).result;
}

function text(content: unknown): string {
  if (typeof content === 'string') return content;
  if (Array.isArray(content))
    return content
      .map((p) => (typeof p === 'object' && p !== null ? String((p as { text?: unknown }).text ?? '') : ''))
      .join('');
  return '';
}

/**
 * A model that, asked `RUN: <command>`, calls the agent's shell tool with it, then reports what the
 * tool returned (`tool said: …`); asked `ECHO:word`, it answers `scripted: word`. Knows the
 * shapes of chat completions, Responses and Anthropic messages.
 */
export function scriptedModel(toolNames: RegExp): (body: Record<string, unknown>) => ScriptedReply {
  return (body) => {
    const msgs = (
      Array.isArray(body.messages) ? body.messages : Array.isArray(body.input) ? body.input : []
    ) as Record<string, unknown>[];
    const isResult = (m: Record<string, unknown>) =>
      m.role === 'tool' ||
      m.type === 'function_call_output' ||
      (Array.isArray(m.content) && (m.content as { type?: string }[]).some((c) => c.type === 'tool_result'));
    const resultText = (m: Record<string, unknown>) =>
      m.role === 'tool'
        ? text(m.content)
        : m.type === 'function_call_output'
          ? String(m.output)
          : (m.content as { type?: string; content?: unknown }[])
              .filter((c) => c.type === 'tool_result')
              .map((c) => text(c.content))
              .join('');
    // Agents wrap the user's text in context of their own (before it, after it, in messages of
    // their own): the instruction is the last user text that has one, wherever it is.
    let at = -1;
    for (let i = msgs.length - 1; i >= 0 && at < 0; i--) {
      const m = msgs[i]!;
      if (m.role === 'user' && !isResult(m) && /RUN: |ECHO:/.test(text(m.content))) at = i;
    }
    const instruction = at >= 0 ? text(msgs[at]!.content) : '';
    const results = msgs.slice(at + 1).filter(isResult);
    if (at >= 0 && results.length > 0) return { text: `tool said: ${results.map(resultText).join('\n')}` };
    const run = /RUN: ([^\n]*)/.exec(instruction);
    const echo = /ECHO:(\S+)/.exec(instruction);
    const tools = (Array.isArray(body.tools) ? body.tools : []) as Record<string, unknown>[];
    const names = tools.map((t) =>
      String((t.function as { name?: string } | undefined)?.name ?? t.name ?? ''),
    );
    const tool = names.find((n) => toolNames.test(n));
    if (run !== null && tool !== undefined) {
      // The command goes in the argument the tool's schema names (`command`, or Codex's `cmd`).
      const def = tools[names.indexOf(tool)]!;
      const schema = ((def.function as { parameters?: unknown } | undefined)?.parameters ??
        def.parameters ??
        def.input_schema) as { properties?: Record<string, unknown> } | undefined;
      const arg = schema?.properties !== undefined && 'cmd' in schema.properties ? 'cmd' : 'command';
      return { toolCalls: [{ name: tool, arguments: JSON.stringify({ [arg]: run[1]!.trim() }) }] };
    }
    return { text: `scripted: ${echo?.[1] ?? 'no ECHO: marker'}` };
  };
}

/** Every file under `dir` (images skipped: they are the registry's packages) that contains `needle`. */
export function filesContaining(dir: string, needle: string): string[] {
  const found: string[] = [];
  const walk = (d: string): void => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      if (p.endsWith('/state/images') || p.endsWith('/state/runtimes')) continue;
      let st;
      try {
        st = statSync(p);
      } catch {
        continue;
      }
      if (st.isDirectory()) walk(p);
      else if (st.isFile() && st.size < 64 * 1024 * 1024 && readFileSync(p).includes(needle)) found.push(p);
    }
  };
  walk(dir);
  return found;
}
