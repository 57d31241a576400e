/**
 * `-o, --output`: every command that has it names the formats it can print, and refuses any other
 * with one line and exit 2 before it does anything. It used to ignore what it did not know:
 * `carapace sandbox ls -o yaml` printed the table a script then failed to parse, and
 * `sandbox create -o yaml` created the sandbox first. Real CLI processes; a real gateway for the
 * commands that change state.
 */
import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { carapace, CLI, freshHome } from './helpers/cli.js';
import { cliAs, startTestGateway, type TestGateway } from './helpers/gateway.js';

describe('an -o the command cannot print', () => {
  it.each([
    [['sandbox', 'ls', '-o', 'yaml'], 'yaml', 'table, wide, json'],
    [['sandbox', 'get', 'web', '--output', 'table'], 'table', 'text, wide, json'],
    [['sandbox', 'create', '--name', 'w', '-o', 'yaml', '--', 'true'], 'yaml', 'text, json'],
    [['sandbox', 'logs', 'web', '-o', 'yaml'], 'yaml', 'text, json'],
    [['policy', 'get', 'web', '-o', 'toml'], 'toml', 'yaml, json'],
    [['policy', 'history', 'web', '-ojsn'], 'jsn', 'table, json'],
    [['policy', 'rollback', 'web', '--to', '1', '-o', 'yaml'], 'yaml', 'text, json'],
    [['provider', 'ls', '-o', 'wide'], 'wide', 'table, json'],
    [['provider', 'test', 'p', '-o', 'yaml'], 'yaml', 'text, json'],
    [['inference', 'get', 'web', '-o', 'table'], 'table', 'text, json, yaml'],
    [['inference', 'usage', '--output=csv'], 'csv', 'table, json'],
    [['gateway', 'status', '-o', 'yaml'], 'yaml', 'text, json'],
    [['blueprint', 'list', '-o', 'yaml'], 'yaml', 'table, json'],
    [['rules', 'approve', '7', '-o', 'bogus'], 'bogus', 'table, json'],
    [['dashboard', '-o', 'yaml'], 'yaml', 'text, json'],
  ])('%j is one line, exit 2, and starts no gateway', (args, bad, formats) => {
    const home = freshHome();
    const r = carapace(args, { home });
    const byDefault = formats.split(', ')[0];
    expect({ status: r.status, stdout: r.stdout, stderr: r.stderr }).toEqual({
      status: 2,
      stdout: '',
      stderr: `carapace: --output ${bad} is not one of ${formats} (leave -o out for ${byDefault})\n`,
    });
    // The commands that talk to the gateway start one when none answers: refused first, none was.
    expect(carapace(['gateway', 'status'], { home }).status).toBe(3);
  });

  it('the formats it names are the ones it prints', () => {
    const home = freshHome();
    const json = carapace(['blueprint', 'list', '-o', 'json'], { home });
    expect(json.status).toBe(0);
    expect(Array.isArray(JSON.parse(json.stdout))).toBe(true);
    const table = carapace(['blueprint', 'list', '-o', 'table'], { home });
    expect(table).toMatchObject({ status: 0, stdout: carapace(['blueprint', 'list'], { home }).stdout });
    expect(table.stdout).toMatch(/^NAME +VERSION/);
    expect(carapace(['sandbox', 'ls', '--help']).stdout).toContain(
      '-o, --output <format>  table | wide | json (wide: more columns, json for',
    );
  });
});

describe('an -o the command cannot print changes nothing', () => {
  let gw: TestGateway;
  const cli = (args: string[]) => cliAs(gw.home, args);
  const names = () =>
    (JSON.parse(cli(['sandbox', 'ls', '-o', 'json']).stdout) as { name: string }[]).map((s) => s.name);

  beforeAll(async () => {
    gw = await startTestGateway();
  });
  afterAll(async () => {
    await gw?.stop();
  });

  it('sandbox create -o yaml records no sandbox; -o json does, and prints it as JSON', () => {
    const create = (o: string) =>
      cli(['sandbox', 'create', '--name', 'w', '--no-start', '-o', o, '--', 'true']);
    expect(create('yaml')).toEqual({
      status: 2,
      stdout: '',
      stderr: 'carapace: --output yaml is not one of text, json (leave -o out for text)\n',
    });
    expect(names()).toEqual([]);
    const made = create('json');
    expect(made.status).toBe(0);
    expect(JSON.parse(made.stdout)).toMatchObject({ name: 'w', state: 'stopped' });
    expect(names()).toEqual(['w']);
  });

  it('sandbox rm is not the place of -o: commander refuses it as an unknown option', () => {
    expect(cli(['sandbox', 'rm', 'w', '-o', 'json'])).toMatchObject({ status: 2, stdout: '' });
    expect(names()).toEqual(['w']);
  });
});

describe('a reader of the output that goes away (| head)', () => {
  it('ends the command as SIGPIPE would (141), without a stack trace', () => {
    // The reader closes its end at once; the CLI writes its list some 40 ms later, into a pipe
    // nobody reads: EPIPE.
    const closed = spawnSync(
      'bash',
      [
        '-c',
        '"$0" "$1" policy presets 2>"$2" | (exec 0<&-; sleep 0.5); echo "status ${PIPESTATUS[0]}"; cat "$2"',
        process.execPath,
        CLI,
        `${freshHome()}/stderr`,
      ],
      { encoding: 'utf8' },
    );
    expect(closed.stdout).toBe('status 141\n');
  });
});
