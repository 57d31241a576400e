/** A real gateway daemon for tests, and the CLI run as any user against it. */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { GATEWAY_NODE_FLAGS } from '../../src/cli/gateway/gateway-client.js';
import { chmodSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CLI, freshHome, type CliResult } from './cli.js';
import { hostUserCommand } from './host-users.js';

export interface TestGateway {
  home: string;
  child: ChildProcess;
  /** Everything the gateway printed (its JSON log). */
  output(): string;
  stop(): Promise<void>;
}

/** Starts `carapace gateway run` in a fresh CARAPACE_HOME and waits until it listens. */
export async function startTestGateway(
  args: string[] = [],
  home = freshHome(),
  env: NodeJS.ProcessEnv = {},
): Promise<TestGateway> {
  chmodSync(home, 0o711);
  const child = spawn(process.execPath, [...GATEWAY_NODE_FLAGS, CLI, 'gateway', 'run', ...args], {
    env: { ...process.env, CARAPACE_HOME: home, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += String(d)));
  child.stderr!.on('data', (d: Buffer) => (out += String(d)));
  await new Promise<void>((resolve, reject) => {
    const check = () => {
      if (out.includes('"gateway listening"')) resolve();
    };
    child.stdout!.on('data', check);
    child.once('exit', (code) => reject(new Error(`the gateway exited (${code}): ${out}`)));
  });
  return {
    home,
    child,
    output: () => out,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      await new Promise((resolve) => child.once('exit', resolve));
    },
  };
}

/** The CLI as `uid` (root by default) against the gateway in `home`. */
export function cliAs(
  home: string,
  args: string[],
  uid = 0,
  gid = uid,
  env: NodeJS.ProcessEnv = {},
): CliResult {
  const r = spawnSync(process.execPath, [CLI, ...args], {
    encoding: 'utf8',
    timeout: 120_000,
    cwd: '/',
    env: { PATH: process.env.PATH, CARAPACE_HOME: home, LANG: 'C.UTF-8', ...env },
    ...(uid !== 0 ? { uid, gid } : {}),
  });
  return { status: r.status, stdout: String(r.stdout), stderr: String(r.stderr) };
}

/** A host user made for a test (in the given groups), removed by `remove()`. */
export interface TestUser {
  name: string;
  uid: number;
  gid: number;
  remove(): void;
}

export function makeUser(prefix: string, groups: string[] = []): TestUser {
  for (const g of groups) hostUserCommand('groupadd', ['-f', g]);
  const name = `${prefix}${process.pid % 100000}`;
  hostUserCommand('userdel', ['--remove', name]);
  const r = hostUserCommand('useradd', [
    '--create-home',
    '--shell',
    '/bin/sh',
    ...(groups.length ? ['-G', groups.join(',')] : []),
    name,
  ]);
  if (r.status !== 0) throw new Error(`useradd ${name}: ${r.stderr}`);
  const uid = Number(spawnSync('id', ['-u', name], { encoding: 'utf8' }).stdout.trim());
  const gid = Number(spawnSync('id', ['-g', name], { encoding: 'utf8' }).stdout.trim());
  return { name, uid, gid, remove: () => void hostUserCommand('userdel', ['--remove', name]) };
}

/** The sandboxes that exist on the host under this gateway's run directory. */
export function sandboxesOnHost(gw: TestGateway): string[] {
  try {
    return readdirSync(join(gw.home, 'run', 'sandboxes')).filter((n) => !n.endsWith('.lock'));
  } catch {
    return [];
  }
}

/** Every audit line the gateway wrote, whatever sandbox it was about. */
export function auditText(gw: TestGateway): string {
  const dir = join(gw.home, 'state', 'audit');
  let text = '';
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      if (e.isDirectory()) walk(join(d, e.name));
      else text += readFileSync(join(d, e.name), 'utf8');
    }
  };
  walk(dir);
  return text;
}

/** Waits until `check` holds, polling; fails naming `what` after `ms`. */
export async function until(what: string, check: () => boolean, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`still not so after ${ms / 1000} s: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
