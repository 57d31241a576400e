/**
 * Mistyped command lines get the one line every error of Carapace's is (`carapace: what (how to go
 * on)`), with commander's suggestion when it has one: it used to print `error: …` and cut the
 * "(Did you mean …?)" line off with the rest.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { imageHost } from '../src/cli/blueprint/blueprint-host.js';
import { say } from '../src/cli/say.js';
import { GatewayError, printedPolicyProblems } from '../src/cli/gateway/gateway-client.js';
import { inFlagWords } from '../src/cli/gateway/body-errors.js';
import { carapace, freshHome } from './helpers/cli.js';

describe('a mistyped command line', () => {
  it.each([
    [
      ['provider', 'create', 'p', '--type', 'openai', '--credential-en', 'K'],
      "carapace: unknown option '--credential-en' (did you mean --credential-env?)\n",
    ],
    [
      ['provider', 'create', 'p', '--type', 'openai', '--api-key', 'sk-x'],
      "carapace: unknown option '--api-key' (--help lists them)\n",
    ],
    [['sandboxx', 'list'], "carapace: unknown command 'sandboxx' (did you mean sandbox?)\n"],
    [
      ['provider', 'create', 'p', '--type', 'opnai', '--credential-env', 'K'],
      'carapace: --type opnai: expected one of openai, anthropic, nvidia, ollama, vllm, openai-compatible (did you mean openai?)\n',
    ],
    [['policy', 'validate'], "carapace: missing required argument 'files'\n"],
    // An unknown preset is what is wrong, not a file named after it (it printed `slak: unknown preset "slak" …`).
    [
      ['policy', 'show-preset', 'slak'],
      'carapace: unknown preset "slak" (did you mean "slack"? carapace policy presets lists them)\n',
    ],
    [
      ['policy', 'apply-ops', 'policies/default.yaml', '--add-preset', 'nmp'],
      'carapace: unknown preset "nmp" (did you mean "npm"? carapace policy presets lists them)\n',
    ],
    [
      ['policy', 'apply-ops', 'policies/default.yaml', '--remove-preset', 'zzzzzzzz'],
      'carapace: unknown preset "zzzzzzzz" (carapace policy presets lists them)\n',
    ],
  ])('%j', (args, line) => {
    const r = carapace(args);
    expect({ status: r.status, stdout: r.stdout, stderr: r.stderr }).toEqual({
      status: 2, // bad input, as a bad option value or file
      stdout: '',
      stderr: line,
    });
  });
});

/**
 * An error's message can carry text a sandbox chose (a path it planted, a gateway's message about
 * its sandbox): the top-level printer escapes every line it prints (src/policy/printable.ts),
 * whatever the error, and keeps the lines a message has (a policy's diagnostics, one a line).
 */
describe('an error line with control or bidi characters', () => {
  it('a path with an escape sequence, a C1 control and a right-to-left override: shown escaped', () => {
    const r = carapace(['run', '--policy', '/nonexistent/a\x1b[2J\x9bb\u202ec.yaml', '--', 'true']);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/^carapace: [^\n]*\n$/);
    expect(r.stderr).toContain('/nonexistent/a\\x1b[2J\\x9bb\\u{202e}c.yaml');
  });

  it("a policy's diagnostics: one line each, each escaped", () => {
    const dir = join(mkdtempSync(join(tmpdir(), 'carapace-errors-')), 'a\x1b]0;x\x07b');
    mkdirSync(dir);
    const file = join(dir, 'policy.yaml');
    writeFileSync(file, 'version: 1\nfoo: 1\nnetwork_policies: 3\n');
    const r = carapace(['run', '--policy', file, '--', 'true']);
    const shown = file.replace('\x1b', '\\x1b').replace('\x07', '\\x07');
    expect(r.stderr.split('\n')).toEqual([
      expect.stringMatching(new RegExp(`^carapace: ${escapeRegExp(shown)}:2:1: unknown key "foo"`)),
      expect.stringMatching(new RegExp(`^${escapeRegExp(shown)}:3:19: "network_policies" must be a map`)),
      '',
    ]);
    rmSync(dirname(dir), { recursive: true });
  });
});

/**
 * `carapace policy validate` prints a file's problems itself, `file:line:col: message`, one a line:
 * the path and the key a message quotes are escaped, the form and the lines kept.
 */
describe('policy validate, of a file whose path and keys hold control characters', () => {
  it('one line a problem, each escaped', () => {
    const dir = join(mkdtempSync(join(tmpdir(), 'carapace-validate-')), 'a\x1b]0;x\x07\u202eb');
    mkdirSync(dir);
    const file = join(dir, 'policy.yaml');
    writeFileSync(file, 'version: 1\n"k\\e[2J\\u202ey": 1\nnetwork_policies: 3\n');
    const r = carapace(['policy', 'validate', file]);
    const shown = file.replace('\x1b', '\\x1b').replace('\x07', '\\x07').replace('\u202e', '\\u{202e}');
    expect({ status: r.status, stdout: r.stdout }).toEqual({ status: 2, stdout: '' });
    expect(r.stderr.split('\n')).toEqual([
      expect.stringMatching(
        new RegExp(`^${escapeRegExp(`${shown}:2:1: unknown key "k\\x1b[2J\\u{202e}y"`)}`),
      ),
      expect.stringMatching(new RegExp(`^${escapeRegExp(shown)}:3:19: "network_policies" must be a map`)),
      '',
    ]);
    rmSync(dirname(dir), { recursive: true });
  });

  it('ok: the path escaped on stdout', () => {
    const dir = join(mkdtempSync(join(tmpdir(), 'carapace-validate-')), 'a\x9bb');
    mkdirSync(dir);
    const file = join(dir, 'policy.yaml');
    writeFileSync(file, 'version: 1\n');
    const r = carapace(['policy', 'validate', file]);
    expect(r.status).toBe(0);
    expect(r.stdout).toBe(`ok  ${file.replace('\x9b', '\\x9b')} (policy, 0 network policies, 0 endpoints)\n`);
    rmSync(dirname(dir), { recursive: true });
  });

  it('a policy the gateway refused: its problems, each escaped', async () => {
    const err = new GatewayError('POLICY_INVALID', 'invalid', 400, [
      { file: 'sent.yaml', line: 2, col: 1, message: 'unknown key "k\x1b[2Jy"' },
      { file: 'sent.yaml', line: 0, col: 0, message: 'a\u202eb' },
    ]);
    let out = '';
    const spy = vi.spyOn(process.stderr, 'write').mockImplementation((chunk) => {
      out += String(chunk);
      return true;
    });
    try {
      expect(printedPolicyProblems(err, 'sent.yaml', '/p/x\x07.yaml')).toBe(true);
    } finally {
      spy.mockRestore();
      process.exitCode = undefined;
    }
    expect(out).toBe('/p/x\\x07.yaml:2:1: unknown key "k\\x1b[2Jy"\n/p/x\\x07.yaml: a\\u{202e}b\n');
  });
});

/**
 * The CLI's own lines that quote text not its own (onboard's steps, an agent image's progress, a
 * forward in trouble, a refused blueprint): escaped as the error lines are.
 */
describe("the CLI's progress and notice lines", () => {
  const captured = async (write: () => unknown): Promise<string> => {
    let out = '';
    const spy = vi.spyOn(process.stderr, 'write').mockImplementation((chunk) => {
      out += String(chunk);
      return true;
    });
    try {
      await write();
    } finally {
      spy.mockRestore();
    }
    return out;
  };

  it('say: one line, escaped', async () => {
    expect(await captured(() => say('sandbox a\x1b[2J\u202eb started\nforged'))).toBe(
      'carapace: sandbox a\\x1b[2J\\u{202e}b started\\x0aforged\n',
    );
  });

  it("an agent image's progress line (a path under the state directory)", async () => {
    const host = await imageHost({});
    expect(await captured(() => host.progress('agent image ready: /s/a\x1b]0;t\x07b'))).toBe(
      'carapace: agent image ready: /s/a\\x1b]0;t\\x07b\n',
    );
  });
});

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * `sandbox create --name` with a name the gateway refuses: the run's line, naming the option (it
 * used to be the API's `body.name: …`), and no gateway started for a command that did nothing.
 */
describe('sandbox create --name that is not a sandbox name', () => {
  it('one line naming --name, exit 2, no gateway started', () => {
    const home = freshHome();
    const r = carapace(['sandbox', 'create', '--name', 'Bad name', '--', 'true'], { home });
    expect({ status: r.status, stdout: r.stdout, stderr: r.stderr }).toEqual({
      status: 2,
      stdout: '',
      stderr:
        "carapace: --name \"Bad name\": use 1-63 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit\n",
    });
    expect(carapace(['gateway', 'status'], { home }).status).toBe(3);
  });
});

/**
 * The API names a bad field of a request body by zod's path (`body.workspace: …`); the user typed a
 * flag. Each create/update flag that becomes a body field is named as the flag; a field no flag
 * sets reads as its path without the API's `body.` (the sandbox name argument: 2273f80).
 */
describe('a request body the gateway refused, in the words of the flags', () => {
  const issue = (path: (string | number)[], message: string) => [{ path, message }];
  it.each([
    [
      'POST',
      '/v1/sandboxes',
      'body.workspace: Invalid string: must start with "/"',
      issue(['workspace'], 'Invalid string: must start with "/"'),
      '--workspace: Invalid string: must start with "/"',
    ],
    [
      'POST',
      '/v1/sandboxes',
      'body.command: Too small: expected array to have >=1 items',
      issue(['command'], 'Too small: expected array to have >=1 items'),
      'the command (after --): Too small: expected array to have >=1 items',
    ],
    [
      'POST',
      '/v1/sandboxes',
      'body.labels.bad key: Invalid key in record',
      issue(['labels', 'bad key'], 'Invalid key in record'),
      '--label "bad key": Invalid key in record',
    ],
    [
      'POST',
      '/v1/sandboxes?owner=7',
      'body.mounts.0.host: Invalid string: must start with "/"',
      issue(['mounts', 0, 'host'], 'Invalid string: must start with "/"'),
      '--mount (the 1st) host: Invalid string: must start with "/"',
    ],
    [
      'POST',
      '/v1/sandboxes',
      'body.env.A-B: Invalid key in record',
      issue(['env', 'A-B'], 'Invalid key in record'),
      '--env "A-B": Invalid key in record',
    ],
    [
      'POST',
      '/v1/sandboxes',
      'body.credentials.K: Too small',
      issue(['credentials', 'K'], 'Too small'),
      '--credential "K": Too small',
    ],
    [
      'POST',
      '/v1/sandboxes',
      'body.forwards.1.host: x',
      issue(['forwards', 1, 'host'], 'x'),
      '--forward (the 2nd) host: x',
    ],
    ['POST', '/v1/sandboxes', 'body.policy: Too big', issue(['policy'], 'Too big'), '--policy: Too big'],
    [
      'PATCH',
      '/v1/sandboxes/keep',
      'body.labels.k: Too big: expected string to have <=256 characters',
      issue(['labels', 'k'], 'Too big: expected string to have <=256 characters'),
      '--label "k": Too big: expected string to have <=256 characters',
    ],
    [
      'PATCH',
      '/v1/sandboxes/keep?owner=0',
      'body.restart: Invalid option',
      issue(['restart'], 'Invalid option'),
      '--restart: Invalid option',
    ],
    ['POST', '/v1/providers', 'body.baseUrl: Invalid', issue(['baseUrl'], 'Invalid'), '--base-url: Invalid'],
    [
      'PATCH',
      '/v1/providers/p',
      'body.type: Invalid option',
      issue(['type'], 'Invalid option'),
      '--type: Invalid option',
    ],
    [
      'PUT',
      '/v1/sandboxes/keep/policy',
      'body.baseRev: Too small',
      issue(['baseRev'], 'Too small'),
      '--base-rev: Too small',
    ],
    [
      'POST',
      '/v1/sandboxes/keep/policy/rollback',
      'body.to: Too small',
      issue(['to'], 'Too small'),
      '--to: Too small',
    ],
    // No flag sets it: its path, no `body.`.
    ['POST', '/v1/sandboxes', 'body.extra.x: Invalid', issue(['extra', 'x'], 'Invalid'), 'extra.x: Invalid'],
    [
      'POST',
      '/v1/sandboxes',
      'body: Unrecognized key: "extra"',
      issue([], 'Unrecognized key: "extra"'),
      'Unrecognized key: "extra"',
    ],
    // The sandbox name argument (path.name), as before.
    [
      'GET',
      '/v1/sandboxes/Keep',
      'path.name: "Keep" is not a sandbox name',
      issue(['name'], '"Keep" is not a sandbox name'),
      '"Keep" is not a sandbox name',
    ],
    // Not a body field error: unchanged.
    [
      'POST',
      '/v1/sandboxes',
      'you already have a sandbox named "keep"',
      undefined,
      'you already have a sandbox named "keep"',
    ],
  ])('%s %s %s', (method, path, message, issues, shown) => {
    expect(inFlagWords(method, path, message, issues)).toBe(shown);
  });
});
