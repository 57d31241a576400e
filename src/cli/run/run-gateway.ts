/**
 * `carapace run` served by a running gateway: when one answers for the caller, a run of the
 * default policy with a temporary workspace (no --policy, --workspace, --mount, --name, --audit
 * or network option) runs its command in a one-off sandbox the gateway started ahead of time
 * (src/gateway/sandboxes/one-off-runs.ts), so the run costs Node's start-up and one round trip instead of a
 * sandbox's whole set-up in this process (docs/benchmarks.md, `startup`). The command gets what it
 * would get in this process's own sandbox: the same policy, workspace, uid and confinement, this
 * process's stdin, stdout and stderr (a pty when both ends are a terminal), its exit status, and
 * SIGINT/SIGTERM/SIGHUP forwarded.
 *
 * No gateway answering, an older one, or one that declines (too many runs of the caller's at once,
 * a user at a quota, a sandbox that did not start) leaves the run to this process: the result is
 * the same, only slower. A decline is said in one line with the gateway's reason (the C front says
 * nothing: it hands the run to this CLI, which asks again and says it; a gateway that did not
 * answer it, it says itself and hands over with --no-gateway, so that no one waits twice).
 * `--no-gateway` asks for that. This file loads only `node:net` and the exec framing: it is the
 * fastest path a user's command takes.
 */
import { readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { ControlError } from '../../sandbox/control/control-common.js';
import { execOver } from '../../sandbox/control/control-exec.js';
import { printable } from '../../policy/printable.js';
import { withTerminal } from '../sandbox/exec-terminal.js';
import { gatewayEndpoint } from '../gateway/gateway-endpoint.js';
import { parseEnv } from './run-env.js';
import type { RunArgs } from './run-options.js';

/** How long a gateway may take to take a sandbox for the run before this process runs it itself. */
const PATIENCE_MS = 15_000;

/**
 * A run Carapace lost after the gateway took it (the gateway went away, or refused the exec after its
 * 101): 125, as a sandbox that could not start, never a status the command itself could have given.
 * native/carapace-front.c exits the same (RUN_LOST).
 */
export class RunLost extends ControlError {
  override name = 'RunLost';
  readonly exitCode = 125;
}

/** A run whose every setting is the default one a gateway's one-off sandboxes have. */
export function gatewayCanServe(a: RunArgs): boolean {
  return (
    a.policy === undefined &&
    a.workspace === undefined &&
    a.mounts.length === 0 &&
    a.name === undefined &&
    a.audit === undefined &&
    !a.bestEffortLimits &&
    a.resolve.length === 0 &&
    a.allowLocal.length === 0 &&
    a.upstreamCa === undefined &&
    a.credentials.length === 0
  );
}

/**
 * Why a gateway that answered declined the run, from its error body (`{"error":{"code","message"}}`,
 * src/gateway/api/server.ts): its message, or null when there is nothing to say. An older gateway
 * without `/v1/runs` (404) is not a refusal: its runs were always this process's.
 */
function declineReason(head: Buffer, end: number): string | null {
  const status = head.subarray(9, 12).toString('latin1');
  if (status === '404') return null;
  try {
    const body = JSON.parse(head.subarray(end + 4).toString('utf8')) as {
      error?: { code?: unknown; message?: unknown };
    };
    const e = body.error;
    if (typeof e?.message === 'string') return e.message;
    if (typeof e?.code === 'string') return e.code;
  } catch {
    // not JSON, or cut short: said with its status alone
  }
  return `HTTP ${status}`;
}

/**
 * The upgraded connection, with the exec's request line sent, or null when no gateway serves runs
 * here (none answers, or it declined). A gateway that declines says why, and that is said once on
 * stderr, escaped (the reason is the gateway's text): the run goes on in this process.
 */
function openRun(socketPath: string, requestLine: string): Promise<Socket | null> {
  return new Promise((resolve) => {
    const socket = connect(socketPath);
    let head = Buffer.alloc(0);
    const done = (value: Socket | null) => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('error', onError);
      socket.off('close', onClose);
      if (value === null) socket.destroy();
      resolve(value);
    };
    /** A refusal's head is in `head` up to `end`: its body is read to its length (or the close). */
    let refusal: { end: number; length: number } | null = null;
    const declined = () => {
      const reason = declineReason(head, refusal!.end);
      if (reason !== null)
        process.stderr.write(
          `carapace: the gateway declined the run (${printable(reason)}): running it in this process\n`,
        );
      done(null);
    };
    const onData = (chunk: Buffer) => {
      head = Buffer.concat([head, chunk]);
      if (refusal !== null) {
        if (head.length >= refusal.end + 4 + refusal.length || head.length > 64 * 1024) declined();
        return;
      }
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) {
        if (head.length > 16 * 1024) done(null);
        return;
      }
      const ok = head.subarray(0, 13).toString('latin1') === 'HTTP/1.1 101 ';
      if (!ok) {
        const length = /\r\ncontent-length: *(\d+)/i.exec(head.subarray(0, end).toString('latin1'));
        refusal = { end, length: length ? Number(length[1]) : Infinity };
        return onData(Buffer.alloc(0));
      }
      socket.pause();
      const rest = head.subarray(end + 4);
      if (rest.length > 0) socket.unshift(rest);
      done(socket);
    };
    const onError = () => (refusal !== null ? declined() : done(null));
    const onClose = () => (refusal !== null ? declined() : done(null));
    const timer = setTimeout(() => {
      process.stderr.write(
        `carapace: the gateway at ${printable(socketPath)} did not answer within ${PATIENCE_MS / 1000} s: running the sandbox in this process\n`,
      );
      done(null);
    }, PATIENCE_MS);
    socket.on('data', onData);
    socket.on('error', onError);
    socket.on('close', onClose);
    // The exec's request line rides with the upgrade (the gateway reads it after its 101): one
    // round trip fewer. A gateway that declines closes the connection and ignores it.
    socket.write(
      'GET /v1/runs HTTP/1.1\r\nHost: carapace\r\nConnection: Upgrade\r\nUpgrade: carapace-stream\r\n\r\n' +
        requestLine,
    );
  });
}

/**
 * Whether this process is a background job of its terminal (`carapace run -- job &`): reading the
 * terminal or making it raw would stop it (SIGTTIN, SIGTTOU), so the command's stdin ends at once
 * instead, as native/carapace-front.c does. /proc/self/stat's pgrp and tpgid (the terminal's
 * foreground group) differ then.
 */
function inBackground(): boolean {
  if (!process.stdin.isTTY) return false;
  try {
    const stat = readFileSync('/proc/self/stat', 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return fields[2] !== fields[5];
  } catch {
    return false;
  }
}

/** Runs the command through the caller's gateway: its exit status, or null when none serves it. */
export async function runThroughGateway(a: RunArgs, env: NodeJS.ProcessEnv): Promise<number | null> {
  const vars = parseEnv(a.env); // a bad --env is refused here, as in this process's own run
  if (env.TERM !== undefined && vars.TERM === undefined) vars.TERM = env.TERM;
  const background = inBackground();
  const tty = !background && Boolean(process.stdin.isTTY && process.stdout.isTTY);
  const request = {
    argv: a.command,
    env: vars,
    tty,
    ...(tty ? { cols: process.stdout.columns, rows: process.stdout.rows } : {}),
  };
  const socket = await openRun(gatewayEndpoint(env).socket, `${JSON.stringify(request)}\n`);
  if (socket === null) return null;
  const proc = execOver(socket, null, 'the gateway');
  const code = await withTerminal(proc, { tty, stdin: !background, detachable: false }, (err) => {
    if (err instanceof ControlError && err.code === 'CONTROL_CLOSED')
      throw new RunLost(
        'CONTROL_CLOSED',
        'the gateway went away (stopped or restarted) before the command ended: the run was killed',
      );
    // EXEC_REFUSED: the init's reason, said once by the caller
    if (err instanceof ControlError) throw new RunLost(err.code, err.message);
    throw err;
  });
  // Why the command could not start (not found, not executable), as the init says it.
  if (proc.failure) process.stderr.write(`${printable(proc.failure)}\n`);
  return code;
}
