/**
 * A sandbox run by the native harness with a control socket (--control-dir-fd), and optionally
 * --log-fd, driven by the library's client (src/sandbox/control/control.ts) as a gateway would.
 */
import { closeSync, constants, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { SandboxControl } from '../../src/sandbox/control/control.js';
import {
  FIRST_EXTRA_FD,
  sandboxOwnedDir,
  startSandbox,
  type Sandbox,
  type SandboxOptions,
} from './harness.js';

const O_PATH = 0o10000000;

export interface ControlledSandbox {
  sandbox: Sandbox;
  control: SandboxControl;
  /** The control directory on the host (control.sock, exit.json, events.jsonl). */
  dir: string;
  /** The --log-fd file, when asked for. */
  logFile?: string;
  /** The init's host pid. */
  initPid: number;
  /** Lines of the log file so far, parsed. */
  logLines(): LogLine[];
}

export interface LogLine {
  t: number;
  s: 'out' | 'err' | 'init';
  d?: string;
  b?: string;
}

/** Starts `command` with a control socket; resolves once the agent runs. */
export async function startControlled(opts: SandboxOptions & { log?: boolean }): Promise<ControlledSandbox> {
  const dir = sandboxOwnedDir();
  const dirFd = openSync(dir, O_PATH | constants.O_DIRECTORY);
  const fds = [...(opts.fds ?? []), dirFd];
  const controlFd = FIRST_EXTRA_FD + fds.length - 1;
  const init = [...(opts.init ?? []), '--control-dir-fd', String(controlFd)];
  let logFile: string | undefined;
  if (opts.log) {
    logFile = join(dir, '..', `${dir.split('/').pop()}.log`);
    const logFd = openSync(logFile, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT, 0o600);
    fds.push(logFd);
    init.push('--log-fd', String(FIRST_EXTRA_FD + fds.length - 1));
  }
  const sandbox = startSandbox({ ...opts, fds, init });
  const status = await sandbox.started;
  // bwrap holds its own copies now.
  for (const fd of fds.slice(opts.fds?.length ?? 0)) closeSync(fd);
  if (!status.some((e) => e.event === 'exec')) {
    const r = await sandbox.result;
    throw new Error(`the sandbox did not start: ${JSON.stringify(status)} ${r.stderr}`);
  }
  const initPid = await sandbox.initPid;
  return {
    sandbox,
    control: new SandboxControl(join(dir, 'control.sock')),
    dir,
    logFile,
    initPid,
    // Whole lines only: a reader can see a line the init is still writing.
    logLines: () =>
      logFile
        ? wholeLines(readFileSync(logFile, 'utf8'))
            .split('\n')
            .filter((l) => l !== '')
            .map((l) => JSON.parse(l) as LogLine)
        : [],
  };
}

/** `text` up to its last newline. */
function wholeLines(text: string): string {
  return text.slice(0, text.lastIndexOf('\n') + 1);
}

/** Everything a stream gives until its end. */
export async function collect(stream: NodeJS.ReadableStream): Promise<string> {
  let text = '';
  for await (const chunk of stream) text += String(chunk);
  return text;
}
