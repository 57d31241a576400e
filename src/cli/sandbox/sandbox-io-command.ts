/**
 * `carapace sandbox exec | connect | forward | upload | download`: reaching into a running
 * sandbox through the gateway. exec is the one primitive (an upgraded connection carrying the
 * init's exec frames, docs/gateway.md); connect is an exec of a login shell in a pty; upload and
 * download are a `tar` on each side of an exec.
 */
import { spawn } from 'node:child_process';
import { lstatSync, statSync } from 'node:fs';
import type { Command } from 'commander';
import { basename, dirname, resolve } from 'node:path';
import { RunInputError } from '../../runtime/sandbox-spec-from-policy.js';
import { ControlError } from '../../sandbox/control/control-common.js';
import { execOver } from '../../sandbox/control/control-exec.js';
import type { ExecProcess } from '../../sandbox/control/control.js';
import { withTerminal } from './exec-terminal.js';
import { GatewayClient, GatewayError } from '../gateway/gateway-client.js';
import { parseForward } from './sandbox-command.js';
import { forwardTrouble, type ForwardView } from './sandbox-print.js';
import { parseEnv } from '../run/run-options.js';
import { printable } from '../../policy/printable.js';

interface ExecArgs {
  name: string;
  argv: string[];
  tty: boolean;
  /** Send this process's stdin (else the command's stdin ends at once). */
  stdin: boolean;
  env?: Record<string, string>;
  cwd?: string | undefined;
  owner?: string | undefined;
}

async function openExec(client: GatewayClient, a: ExecArgs): Promise<ExecProcess> {
  const q = a.owner !== undefined ? `?owner=${encodeURIComponent(a.owner)}` : '';
  const socket = await client.upgrade(`/v1/sandboxes/${encodeURIComponent(a.name)}/exec${q}`);
  const size =
    a.tty && process.stdout.isTTY ? { cols: process.stdout.columns, rows: process.stdout.rows } : {};
  return execOver(
    socket,
    { argv: a.argv, env: a.env ?? {}, ...(a.cwd ? { cwd: a.cwd } : {}), tty: a.tty, ...size },
    `sandbox ${a.name}`,
  );
}

/** Runs an exec with this terminal: raw mode and resizes with a tty, signals forwarded without. */
async function interactive(client: GatewayClient, a: ExecArgs, detachable: boolean): Promise<number> {
  const proc = await openExec(client, a);
  try {
    return await withTerminal(proc, { tty: a.tty, stdin: a.stdin, detachable }, async (err, detached) => {
      if (detached) {
        process.stderr.write('\r\n[detached: the sandbox runs on]\r\n');
        return 0;
      }
      // Cut by a gateway that stopped (docs/gateway.md): say that, not the control protocol's words.
      if (err instanceof ControlError && err.code === 'CONTROL_CLOSED' && !(await client.answers()))
        throw new GatewayError(
          'GATEWAY_UNAVAILABLE',
          `the gateway at ${client.endpoint.socket} went away (stopped or restarted) before the command ended: the command was hung up; sandbox ${a.name} runs on`,
          503,
        );
      throw err;
    });
  } finally {
    if (proc.failure) process.stderr.write(`carapace: ${printable(proc.failure)}\n`);
  }
}

/**
 * Runs an exec whose stdin and stdout are streams of this process (tar on each side). `input` is
 * made only once the exec is open: Node drops what a child wrote that nobody read by the time it
 * exits, and opening the exec takes a round trip.
 */
async function piped(
  client: GatewayClient,
  a: ExecArgs,
  input?: () => NodeJS.ReadableStream,
  output?: NodeJS.WritableStream,
) {
  const proc = await openExec(client, a);
  if (input) input().pipe(proc.stdin);
  else proc.stdin.end();
  if (output) proc.stdout.pipe(output);
  else proc.stdout.resume();
  let err = '';
  proc.stderr.on('data', (d: Buffer) => (err += String(d)));
  const code = await proc.exited;
  return { code, stderr: err.trim(), failure: proc.failure };
}

const collect = (value: string, previous: string[]) => [...previous, value];

export function registerSandboxIo(sandbox: Command): void {
  sandbox
    .command('exec')
    .description('run a command in a running sandbox, as confined as its agent; its exit code is yours')
    .usage('[options] NAME -- CMD [ARGS…]')
    .argument('<name>')
    .argument('<command...>')
    .option('-i, --interactive', 'send this terminal’s input to the command')
    .option('-t, --tty', 'give the command a terminal (with -i: a shell session)')
    .option('--env <name=value>', 'a variable for the command (repeatable)', collect, [])
    .option('-w, --workdir <dir>', 'the working directory inside (default /sandbox)')
    .option('--owner <uid>', "another user's (root and carapace-admin)")
    .passThroughOptions()
    .action(
      async (
        name: string,
        argv: string[],
        o: { interactive?: boolean; tty?: boolean; env: string[]; workdir?: string; owner?: string },
      ) => {
        if (argv[0] === '--') argv = argv.slice(1); // commander passes the separator through
        if (argv.length === 0) throw new RunInputError('sandbox exec: give the command after --');
        const client = await GatewayClient.connect();
        process.exitCode = await interactive(
          client,
          {
            name,
            argv,
            tty: o.tty === true,
            stdin: o.interactive === true,
            env: parseEnv(o.env),
            cwd: o.workdir,
            owner: o.owner,
          },
          false,
        );
      },
    );

  sandbox
    .command('connect')
    .description('an interactive shell in a running sandbox (Ctrl-P Ctrl-Q leaves it; the sandbox runs on)')
    .argument('<name>')
    .option('--owner <uid>', "another user's (root and carapace-admin)")
    .action(async (name: string, o: { owner?: string }) => {
      if (!process.stdin.isTTY)
        throw new RunInputError('sandbox connect needs a terminal: use sandbox exec NAME -- CMD in scripts');
      const client = await GatewayClient.connect();
      const shell = [
        '/bin/sh',
        '-c',
        'if command -v bash >/dev/null 2>&1; then exec bash -l; else exec sh -l; fi',
      ];
      process.exitCode = await interactive(
        client,
        {
          name,
          argv: shell,
          tty: true,
          stdin: true,
          env: { TERM: process.env.TERM ?? 'xterm' },
          owner: o.owner,
        },
        true,
      );
    });

  sandbox
    .command('forward')
    .description(
      "reach a listener inside from the host's loopback: HOSTPORT[:SANDBOXPORT] (kept, restored with the sandbox)",
    )
    .argument('<name>')
    .argument('[ports]', 'HOSTPORT or HOSTPORT:SANDBOXPORT')
    .option('--list', 'the forwards')
    .option('--remove <hostport>', 'remove the forward from this host port')
    .option('--owner <uid>', "another user's (root and carapace-admin)")
    .action(
      async (
        name: string,
        ports: string | undefined,
        o: { list?: boolean; remove?: string; owner?: string },
      ) => {
        const client = await GatewayClient.connect();
        const base = `/v1/sandboxes/${encodeURIComponent(name)}/forwards`;
        const q = o.owner !== undefined ? `?owner=${encodeURIComponent(o.owner)}` : '';
        let list: ForwardView[];
        if (o.remove !== undefined && !/^\d{1,5}$/.test(o.remove))
          throw new RunInputError(`--remove ${o.remove}: expected the host port of a forward`);
        if (o.remove !== undefined)
          list = await client.call('DELETE', `${base}/${encodeURIComponent(o.remove)}${q}`);
        else if (ports !== undefined) {
          list = await client.call('POST', `${base}${q}`, parseForward(ports));
        } else list = await client.call('GET', `${base}${q}`);
        for (const f of list)
          process.stdout.write(`127.0.0.1:${f.hostPort} → ${name}:${f.sandboxPort}${forwardTrouble(f)}\n`);
        if (list.length === 0) process.stdout.write(`no forwards for ${name}\n`);
      },
    );

  sandbox
    .command('upload')
    .description('copy a host file or directory into a running sandbox (default: into /sandbox)')
    .argument('<name>')
    .argument('<local>')
    .argument('[remote]', 'a directory inside', '/sandbox')
    .option('--owner <uid>', "another user's (root and carapace-admin)")
    .action(async (name: string, local: string, remote: string, o: { owner?: string }) => {
      const path = resolve(local);
      try {
        lstatSync(path);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        throw new RunInputError(
          `upload: ${local}: ${code === 'ENOENT' ? 'no such file or directory' : code}`,
        );
      }
      let packed: Promise<number> = Promise.resolve(0);
      let packErr = '';
      const pack = () => {
        const tar = spawn('tar', ['-C', dirname(path), '-cf', '-', basename(path)], {
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        tar.stderr.on('data', (d: Buffer) => (packErr += String(d)));
        packed = new Promise<number>((res) => tar.on('close', (c) => res(c ?? 1)));
        return tar.stdout;
      };
      const client = await GatewayClient.connect();
      const r = await piped(
        client,
        { name, argv: ['tar', '-C', remote, '-xf', '-'], tty: false, stdin: true, owner: o.owner },
        pack,
      );
      const local_ = await packed;
      if (local_ !== 0)
        throw new RunInputError(`upload of ${local}: ${firstLine(packErr) || `tar exited ${local_}`}`);
      if (r.code !== 0)
        throw new RunInputError(
          `upload into ${remote}: ${firstLine(r.failure ?? r.stderr) || `tar exited ${r.code}`}`,
        );
    });

  sandbox
    .command('download')
    .description('copy a file or directory out of a running sandbox (default: into the current directory)')
    .argument('<name>')
    .argument('<remote>')
    .argument('[dir]', 'an existing host directory to copy into', '.')
    .option('--owner <uid>', "another user's (root and carapace-admin)")
    .action(async (name: string, remote: string, local: string, o: { owner?: string }) => {
      // Where it goes is checked first: tar's "Cannot open" came only after the copy inside.
      let isDir: boolean;
      try {
        isDir = statSync(local).isDirectory();
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        throw new RunInputError(
          `download into ${local}: ${code === 'ENOENT' ? 'no such directory (make it first)' : code}`,
        );
      }
      if (!isDir) throw new RunInputError(`download into ${local}: not a directory`);
      // Its complaints are kept: when the copy fails inside, the reason to show is the inside's.
      // The archive is the sandbox's to shape: its owners and modes are not taken (tar as root
      // would otherwise chown each file to the uid inside and keep set-uid bits, planting a
      // set-uid program of another host user); what comes out is the caller's, under its umask.
      const tar = spawn(
        'tar',
        ['-C', resolve(local), '--no-same-owner', '--no-same-permissions', '-xf', '-'],
        {
          stdio: ['pipe', 'inherit', 'pipe'],
        },
      );
      // Listened for now: tar ends at the archive's end-of-archive blocks, which can be before the
      // exec's exit arrives, and a 'close' nobody heard would leave this command waiting on nothing
      // (Node then exits 0, the failure unsaid).
      const extracted = new Promise<number>((res) => tar.on('close', (c) => res(c ?? 1)));
      let localErr = '';
      tar.stderr.on('data', (d: Buffer) => (localErr += String(d)));
      const client = await GatewayClient.connect();
      const r = await piped(
        client,
        {
          name,
          argv: ['tar', '-C', dirname(remote), '-cf', '-', basename(remote)],
          tty: false,
          stdin: false,
          owner: o.owner,
        },
        undefined,
        tar.stdin,
      );
      const local_ = await extracted;
      if (r.code !== 0)
        throw new RunInputError(
          `download of ${remote}: ${firstLine(r.failure ?? r.stderr) || `tar exited ${r.code}`}`,
        );
      if (local_ !== 0)
        throw new RunInputError(`download into ${local}: ${firstLine(localErr) || `tar exited ${local_}`}`);
    });
}

/** The first line of a program's complaint, for a one-line error (tar says why first). */
function firstLine(text: string): string {
  return printable(text.trim().split('\n')[0] ?? '');
}
