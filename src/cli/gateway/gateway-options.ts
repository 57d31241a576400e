/**
 * The gateway's options (`gateway run`, and `gateway start`, which runs it in the background):
 * one table for both commands, checked into the daemon's typed configuration here, and kept for
 * the gateways the CLI starts.
 *
 * Kept: `gateway start OPTIONS` stores the options it was given in `<state>/gateway-options.json`
 * (0600, the caller's), and every gateway the CLI starts later (`gateway start` alone, or the first
 * command that finds none answering) runs with them, so a stop and a start, or a reboot, do not
 * lose the operator's `--allow-local`. An option given replaces the stored values of that option;
 * `--reset-options` forgets them all. A service manager's `gateway run` takes its own command line
 * and reads nothing stored.
 */
import type { Command } from 'commander';
import { accessSync, constants, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { AuditRotation } from '../../audit/index.js';
import type { GatewayConfig } from '../../gateway/daemon.js';
import type { LogRotation } from '../../gateway/sandboxes/agent-log.js';
import type { StateDirs } from '../../sandbox/state-dirs.js';
import { UsageError } from '../errors.js';
import { parseAllowLocal, parseResolve } from '../run/run-options.js';

interface OptionDef {
  /** commander's key */
  key: keyof GatewayOptionValues;
  flags: string;
  help: string;
  /** `gateway run`'s default; `gateway start` has none, so that what was given is known. */
  default?: string;
  repeatable?: boolean;
}

export interface GatewayOptionValues {
  maxSandboxes: string;
  maxMemory: string;
  defaultMemory: string;
  restartBackoff: string;
  crashLoop: string;
  auditRotate: string;
  logRotate: string;
  resolve: string[];
  allowLocal: string[];
  upstreamCa?: string | undefined;
}

const OPTIONS: readonly OptionDef[] = [
  {
    key: 'maxSandboxes',
    flags: '--max-sandboxes <n>',
    help: "sandboxes one user may hold, carapace runs in progress included (root's and carapace-admin's are not limited)",
    default: '32',
  },
  {
    key: 'maxMemory',
    flags: '--max-memory <size>',
    help: "memory limits one user's sandboxes may add up to",
    default: '16Gi',
  },
  {
    key: 'defaultMemory',
    flags: '--default-memory <size>',
    help: "memory limit of a user's sandbox whose policy sets none, and of a user's carapace run",
    default: '2Gi',
  },
  {
    key: 'restartBackoff',
    flags: '--restart-backoff <min:max>',
    help: 'wait before a restart: doubles per quick run from min to max',
    default: '1s:5m',
  },
  {
    key: 'crashLoop',
    flags: '--crash-loop <runs>',
    help: 'quick runs in a row (under 10 minutes each) that make a crash loop',
    default: '5',
  },
  {
    key: 'auditRotate',
    flags: '--audit-rotate <size:files>',
    help: "each sandbox's audit trail: a file passing SIZE is rotated, FILES of them are kept (the oldest dropped, and that audited)",
    default: '16Mi:4',
  },
  {
    key: 'logRotate',
    flags: '--log-rotate <size:files>',
    help: "each sandbox's agent output log: no file passes SIZE (past half, it is rotated; full, output is dropped and counted), FILES of them are kept",
    default: '16Mi:2',
  },
  {
    key: 'resolve',
    flags: '--resolve <host=ip>',
    help: "resolve HOST to IP for every sandbox's egress proxy, instead of DNS (repeatable)",
    repeatable: true,
  },
  {
    key: 'allowLocal',
    flags: '--allow-local <ip:port>',
    help: 'trust a host-local upstream the proxy would refuse as SSRF, for every sandbox whose policy allows it (repeatable)',
    repeatable: true,
  },
  {
    key: 'upstreamCa',
    flags: '--upstream-ca <file>',
    help: 'PEM file of extra CAs the proxy trusts for upstream TLS',
  },
];

const collect = (value: string, previous: string[] | undefined) => [...(previous ?? []), value];

/** The option's long name as typed (`--allow-local`). */
const flagOf = (def: OptionDef) => def.flags.split(' ')[0]!;

/** Adds the gateway's options to `run` (with their defaults) or `start` (without). */
export function addGatewayOptions(cmd: Command, withDefaults: boolean): Command {
  for (const def of OPTIONS) {
    if (def.repeatable) cmd.option(def.flags, def.help, collect, withDefaults ? [] : undefined);
    else if (withDefaults && def.default !== undefined) cmd.option(def.flags, def.help, def.default);
    else cmd.option(def.flags, def.help);
  }
  return cmd;
}

/**
 * The options given on the command line, as arguments (`['--allow-local', '127.0.0.1:11434']`),
 * in the table's order: what `gateway status` shows and what `gateway start` stores.
 */
export function givenOptions(cmd: Command): string[] {
  const args: string[] = [];
  for (const def of OPTIONS) {
    if (cmd.getOptionValueSource(def.key) !== 'cli') continue;
    const value = cmd.getOptionValue(def.key) as string | string[];
    for (const v of Array.isArray(value) ? value : [value]) args.push(flagOf(def), v);
  }
  return args;
}

/** Arguments back into values (stored options, `gateway run`'s own). */
function parseOptions(args: readonly string[], where: string): Partial<GatewayOptionValues> {
  const out: Record<string, string | string[]> = {};
  for (let i = 0; i < args.length; i += 2) {
    const def = OPTIONS.find((d) => flagOf(d) === args[i]);
    const value = args[i + 1];
    if (!def || value === undefined)
      throw new UsageError(
        `${where}: ${JSON.stringify(args[i])} is not a gateway option with a value (carapace gateway start --reset-options)`,
      );
    if (def.repeatable) out[def.key] = [...((out[def.key] as string[] | undefined) ?? []), value];
    else out[def.key] = value;
  }
  return out as Partial<GatewayOptionValues>;
}

/** Options as arguments, in the table's order. */
function toArgs(values: Partial<GatewayOptionValues>): string[] {
  const args: string[] = [];
  for (const def of OPTIONS) {
    const value = values[def.key];
    if (value === undefined) continue;
    for (const v of Array.isArray(value) ? value : [value]) args.push(flagOf(def), v);
  }
  return args;
}

/**
 * `stored` with `given` on top: an option given replaces every stored value of that option.
 * Paths are made absolute (the gateway runs elsewhere, later).
 */
export function mergeOptions(stored: readonly string[], given: readonly string[]): string[] {
  const values = { ...parseOptions(stored, 'stored options'), ...parseOptions(given, 'options') };
  if (values.upstreamCa !== undefined) values.upstreamCa = resolve(values.upstreamCa);
  return toArgs(values);
}

/** Checks options as `gateway run` would, without starting anything; throws the first problem. */
export function checkOptions(args: readonly string[], where?: string): void {
  try {
    gatewayConfigOf({ ...RUN_DEFAULTS, ...parseOptions(args, where ?? 'options') });
  } catch (err) {
    if (where === undefined || (err as Error).message.startsWith(where)) throw err;
    throw new UsageError(`${where}: ${(err as Error).message}`);
  }
}

const RUN_DEFAULTS: GatewayOptionValues = {
  maxSandboxes: '32',
  maxMemory: '16Gi',
  defaultMemory: '2Gi',
  restartBackoff: '1s:5m',
  crashLoop: '5',
  auditRotate: '16Mi:4',
  logRotate: '16Mi:2',
  resolve: [],
  allowLocal: [],
};

/** The daemon's settings from its options; one line on what is wrong (UsageError, exit 2). */
export function gatewayConfigOf(
  opts: GatewayOptionValues,
): Pick<GatewayConfig, 'quotas' | 'restart' | 'proxy' | 'audit' | 'logs'> {
  const sandboxes = Number(opts.maxSandboxes);
  if (!/^\d+$/.test(opts.maxSandboxes) || !Number.isSafeInteger(sandboxes))
    throw new UsageError(`--max-sandboxes ${opts.maxSandboxes}: expected a whole number`);
  return {
    quotas: {
      sandboxes,
      memoryBytes: bytes(opts.maxMemory, '--max-memory'),
      defaultMemoryBytes: bytes(opts.defaultMemory, '--default-memory'),
    },
    restart: restartSettings(opts.restartBackoff, opts.crashLoop),
    audit: auditRotation(opts.auditRotate),
    logs: logRotation(opts.logRotate),
    proxy: {
      // The same checks, and the same lines, as `carapace run`'s.
      hosts: asGatewayInput(() => parseResolve(opts.resolve)),
      allowLocal: asGatewayInput(() => parseAllowLocal(opts.allowLocal)),
      upstreamCaFile: opts.upstreamCa === undefined ? undefined : readable(opts.upstreamCa),
    },
  };
}

function asGatewayInput<T>(parse: () => T): T {
  try {
    return parse();
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

function readable(file: string): string {
  try {
    accessSync(file, constants.R_OK);
  } catch {
    throw new UsageError(`--upstream-ca ${file}: cannot read that file`);
  }
  return resolve(file);
}

const SIZE = /^(\d+)(Ki|Mi|Gi|Ti)?$/;
function bytes(text: string, option: string): number {
  const m = SIZE.exec(text);
  if (!m) throw new UsageError(`${option} ${text}: expected a size like 512Mi or 16Gi`);
  return Number(m[1]) * 1024 ** ['', 'Ki', 'Mi', 'Gi', 'Ti'].indexOf(m[2] ?? '');
}

function duration(text: string, option: string): number {
  const m = /^(\d+)(ms|s|m|h)$/.exec(text);
  if (!m) throw new UsageError(`${option} ${text}: expected a duration like 500ms, 1s, 5m`);
  return Number(m[1]) * { ms: 1, s: 1e3, m: 6e4, h: 3.6e6 }[m[2] as 'ms']!;
}

interface RotationBounds {
  option: string;
  example: string;
  minBytes: number;
  maxBytes: number;
  sizeHint: string;
  minFiles: number;
}

/** `SIZE:FILES` within `bounds`: what the audit's and the agents' logs' rotation options share. */
function rotation(text: string, bounds: RotationBounds): { maxFileBytes: number; files: number } {
  const { option } = bounds;
  const [size, files, extra] = text.split(':');
  if (size === undefined || files === undefined || extra !== undefined || !/^\d+$/.test(files))
    throw new UsageError(`${option} ${text}: expected SIZE:FILES, like ${bounds.example}`);
  const maxFileBytes = bytes(size, option);
  if (maxFileBytes < bounds.minBytes || maxFileBytes > bounds.maxBytes)
    throw new UsageError(`${option} ${text}: ${bounds.sizeHint}`);
  const count = Number(files);
  if (count < bounds.minFiles || count > 1000)
    throw new UsageError(`${option} ${text}: keep from ${bounds.minFiles} to 1000 files`);
  return { maxFileBytes, files: count };
}

/** The audit: at least 64Ki a file (a few hundred lines), 1 to 1000 files. */
const auditRotation = (text: string): AuditRotation =>
  rotation(text, {
    option: '--audit-rotate',
    example: '16Mi:4',
    minBytes: 64 * 1024,
    maxBytes: Number.MAX_SAFE_INTEGER,
    sizeHint: 'a file of at least 64Ki (a few hundred lines)',
    minFiles: 1,
  });

/**
 * The agent's log: at least 1Mi a file (the init's --log-limit: a few of its longest lines), and 2
 * to 1000 files (one alone would have the lines written between the rename and the init's switch
 * go to a file already dropped).
 */
const logRotation = (text: string): LogRotation =>
  rotation(text, {
    option: '--log-rotate',
    example: '16Mi:2',
    minBytes: 1024 * 1024,
    maxBytes: 1024 ** 4,
    sizeHint: 'a file of 1Mi to 1Ti',
    minFiles: 2,
  });

function restartSettings(backoff: string, crashLoop: string) {
  const [min, max] = backoff.split(':');
  const runs = Number(crashLoop);
  if (!min || !max) throw new UsageError(`--restart-backoff ${backoff}: expected MIN:MAX, like 1s:5m`);
  if (!Number.isInteger(runs) || runs < 1)
    throw new UsageError(`--crash-loop ${crashLoop}: expected a whole number ≥ 1`);
  return {
    minBackoffMs: duration(min, '--restart-backoff'),
    maxBackoffMs: duration(max, '--restart-backoff'),
    crashLoopRuns: runs,
    stableMs: 10 * 60_000,
  };
}

/** Where `gateway start` keeps its options. */
export function storedOptionsPath(dirs: StateDirs): string {
  return join(dirs.state, 'gateway-options.json');
}

/** The stored options (none when nothing was stored), checked: a bad file is one line naming it. */
export function readStoredOptions(dirs: StateDirs): string[] {
  const file = storedOptionsPath(dirs);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new UsageError(`${file}: cannot read it: ${(err as Error).message}`);
  }
  let args: unknown;
  try {
    args = (JSON.parse(text) as { options?: unknown }).options;
  } catch {
    args = undefined;
  }
  if (!Array.isArray(args) || !args.every((a) => typeof a === 'string'))
    throw new UsageError(
      `${file}: expected {"options": ["--flag", "value", …]} (carapace gateway start --reset-options writes a fresh one)`,
    );
  checkOptions(args as string[], file);
  return args as string[];
}

/** Stores `args` (checked already) for the gateways the CLI starts from now on. */
export function storeOptions(dirs: StateDirs, args: readonly string[]): void {
  mkdirSync(dirs.state, { recursive: true, mode: 0o700 });
  const file = storedOptionsPath(dirs);
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify({ options: args }, null, 2) + '\n', { mode: 0o600 });
  renameSync(tmp, file);
}
