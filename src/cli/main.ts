/**
 * The `carapace` command. Library code throws typed errors; this file alone turns them into one
 * line on stderr and an exit code.
 *
 * Its start-up is the floor of every command a user types (docs/benchmarks.md): `--version` reads
 * one file, a well-formed `run [options] -- CMD` loads the sandbox and nothing else, and the rest
 * loads only the command asked for. Installed, this file is the entry of the bundle in dist/cli/
 * (scripts/build-cli.ts), started by the Node its first line names.
 */
import type { Command } from 'commander';
import { chmodSync, mkdirSync, statSync } from 'node:fs';
import nodeModule from 'node:module';
import { join } from 'node:path';
import { packageRoot } from '../sandbox/native-paths.js';
import { exitCodeFor, messageFor, printableLines } from './errors.js';
import { carapaceVersion, NODE_MAJOR } from './version.js';

// Older Node.js releases lack what the bundle uses (and their security fixes): one line, not a
// stack (which is why `node:module` is imported whole: Node 20 has no enableCompileCache to link).
if (Number(process.versions.node.split('.')[0]) < NODE_MAJOR) {
  process.stderr.write(
    `carapace: needs Node.js ${NODE_MAJOR} or newer, not ${process.version} (${process.execPath}): ` +
      'run the carapace that ./install.sh puts on PATH, which starts the Node.js npm ci installed\n',
  );
  process.exit(1);
}

/**
 * V8's compiled code of the modules loaded below, cached between runs (Node's compile cache).
 * V8 trusts what it reads back, so whoever can write the cache can run code in every later
 * `carapace`, as root when root runs it: the cache lives beside the code, in the installation's
 * own dist/, in a directory private to its owner (Node adds one subdirectory per uid inside), and
 * never where a sandbox or another user can write. Another user runs uncached. Set before the
 * first dynamic import: what is already compiled by now is this file's chunk.
 */
function enableCodeCache(): void {
  const dir = join(packageRoot(), 'dist', 'compile-cache');
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    if ((statSync(dir).mode & 0o077) !== 0) chmodSync(dir, 0o700);
  } catch {
    return; // not ours (or a read-only installation): run uncached
  }
  nodeModule.enableCompileCache(dir);
}
enableCodeCache();

/**
 * Each command's module, loaded only when that command is the one asked for: the policy engine
 * alone takes longer to load than a one-shot sandbox takes to run. Help, a bare `carapace` and an
 * unknown command load them all (the help lists them, the error suggests one).
 */
const COMMANDS: Record<string, () => Promise<(program: Command) => void>> = {
  dashboard: async () => (await import('./operator/dashboard-command.js')).registerDashboard,
  blueprint: async () => (await import('./blueprint/blueprint-command.js')).registerBlueprint,
  doctor: async () => (await import('./doctor-command.js')).registerDoctor,
  gateway: async () => (await import('./gateway/gateway-command.js')).registerGateway,
  inference: async () => (await import('./models/inference-command.js')).registerInference,
  onboard: async () => (await import('./onboard/onboard-command.js')).registerOnboard,
  policy: async () => (await import('./policy/policy-command.js')).registerPolicy,
  provider: async () => (await import('./models/provider-command.js')).registerProvider,
  rules: async () => (await import('./operator/rules-command.js')).registerRules,
  run: async () => (await import('./run/run-command.js')).registerRun,
  sandbox: async () => (await import('./sandbox/sandbox-command.js')).registerSandbox,
  term: async () => (await import('./operator/term-command.js')).registerTerm,
};

/**
 * Commander's error as the one line every error of ours is: `carapace: what (how to go on)`. Its
 * "(Did you mean --x?)" follows on a line of its own, and was cut off with the rest.
 */
function commanderLine(text: string): string {
  const [first = '', ...rest] = text.trim().split('\n');
  const what = first.replace(/^error: /, '');
  const suggestion = rest.map((l) => /^\(Did you mean (.+)\?\)$/.exec(l.trim())?.[1]).find(Boolean);
  const hint =
    suggestion !== undefined
      ? ` (did you mean ${suggestion}?)`
      : /^unknown (option|command)/.test(what)
        ? ' (--help lists them)'
        : '';
  return `carapace: ${printableLines(what)}${hint}\n`;
}

async function buildProgram(argv: readonly string[] = []): Promise<Command> {
  const { Command, Help } = await import('commander');
  const plain = new Help();
  const program = new Command('carapace')
    .description('A secure, sandboxed runtime for always-on AI agents.')
    .version(carapaceVersion(), '-V, --version', 'print the version')
    .showSuggestionAfterError(true)
    .enablePositionalOptions()
    .exitOverride()
    .configureOutput({ outputError: (str, write) => write(commanderLine(str)) })
    // A repeatable option starts as an empty list: "(default: [])" says nothing to a reader. Set
    // before the commands are added, which copy it (test/cli-help.test.ts).
    .configureHelp({
      optionDescription: (option) =>
        plain.optionDescription(
          Array.isArray(option.defaultValue) && option.defaultValue.length === 0
            ? Object.assign(Object.create(option) as typeof option, { defaultValue: undefined })
            : option,
        ),
    });
  const asked = argv[2] === 'sb' ? 'sandbox' : argv[2]; // commander knows the alias; the loader too
  const names = asked !== undefined && asked in COMMANDS ? [asked] : Object.keys(COMMANDS);
  for (const register of await Promise.all(names.map((n) => COMMANDS[n]!()))) register(program);
  return program;
}

async function main(argv: string[]): Promise<number> {
  try {
    if (argv.length === 3 && (argv[2] === '--version' || argv[2] === '-V')) {
      process.stdout.write(`${carapaceVersion()}\n`);
      return 0;
    }
    if (argv[2] === 'run') {
      // A well-formed `carapace run [options] -- CMD` starts without loading commander.
      const run = await import('./run/run-command.js');
      const opts = run.parseRunArgs(argv.slice(3));
      if (opts !== null) return await run.run(opts);
    }
    const program = await buildProgram(argv);
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    const { CommanderError } = await import('commander');
    if (err instanceof CommanderError) {
      // Commander already printed its one line (or the help/version text, with exit code 0). A
      // mistyped command line is bad input, exit 2, as every other (an option's value, a file).
      return err.exitCode === 0 ? 0 : 2;
    }
    process.stderr.write(`carapace: ${messageFor(err)}\n`);
    return exitCodeFor(err);
  }
}

// A command whose work waits on something that can no longer happen (an event heard too late)
// would otherwise end the process with status 0 when the event loop runs dry: say so, and fail.
const unfinished = () => {
  process.stderr.write('carapace: internal error: the command stopped before it finished\n');
  process.exitCode = 70;
};
process.once('beforeExit', unfinished);

/**
 * The reader of our output went away (`carapace sandbox logs NAME --audit | head`): end as a
 * program killed by SIGPIPE ends (status 141, what a shell reports for it), not with Node's stack
 * trace of an unhandled EPIPE. A command that deals with it itself (exec, and a run through the
 * gateway, send their command SIGPIPE and return its status) listens too, and this one leaves it
 * to that command.
 */
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (err: NodeJS.ErrnoException) => {
    if (stream.listenerCount('error') > 1) return;
    if (err.code === 'EPIPE') process.exit(141);
    throw err;
  });
}

/**
 * Resolves once what was written to `stream` has left the process. Writes to a pipe that is full
 * (its reader slower than we are: `| grep`, a script) wait in a queue, which process.exit throws
 * away: `sandbox logs --audit | …` lost all it printed past the pipe's 64 KiB.
 */
function drained(stream: NodeJS.WriteStream): Promise<void> {
  if (stream.writableLength === 0) return Promise.resolve();
  return new Promise((resolve) => stream.write('', () => resolve()));
}

main(process.argv).then(
  async (code) => {
    process.off('beforeExit', unfinished);
    await Promise.all([drained(process.stdout), drained(process.stderr)]);
    process.exit(code);
  },
  (err: unknown) => {
    const text = err instanceof Error ? (err.stack ?? err.message) : String(err);
    process.stderr.write(`carapace: internal error: ${printableLines(text)}\n`);
    process.exit(70);
  },
);
