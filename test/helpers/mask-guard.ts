/**
 * What the mask guard's tests share (src/sandbox/mounts/mask-guard.ts, docs/security.md "A host file
 * replaced while a sandbox runs"): a host tree a policy lists, the host's rename of a file in it,
 * waiting for the guard to say it masked a name again, and a sandbox started through the library
 * by a process of its own (a starter script): as another user (rootless), or detached for a later
 * process to take over (a restarted gateway).
 */
import { spawn } from 'node:child_process';
import { chmodSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { MaskCheck } from '../../src/sandbox/mounts/mask-guard.js';
import { REPO } from './cli.js';
import { sharedTempDir } from './sandbox.js';

/**
 * The first check from index `from` on that restored `target` (or, with `emptied`, masked it by an
 * empty one of the other kind), or null after `ms`: a bound on the wait, not a timing assertion.
 * `checks` is the live array the guard's callback fills.
 */
export function restoredWithin(
  checks: MaskCheck[],
  target: string,
  ms: number,
  from = 0,
  how: 'restored' | 'emptied' = 'restored',
): Promise<MaskCheck | null> {
  return new Promise((resolve) => {
    const deadline = Date.now() + ms;
    const look = () => {
      const hit = checks.slice(from).find((c) => (c[how] ?? []).includes(target));
      if (hit || Date.now() > deadline) resolve(hit ?? null);
      else setTimeout(look, 20);
    };
    look();
  });
}

/** What a rename by the host does: a new file under a temporary name, renamed over the old one. */
export function replaceOnHost(path: string, content: string, mode = 0o644): void {
  writeFileSync(`${path}.new`, content, { mode });
  chmodSync(`${path}.new`, mode);
  renameSync(`${path}.new`, path);
}

/** A policy that lists the host directory `dir` read-only, beside the system's. */
export function hostTreePolicy(dir: string, file = join(sharedTempDir(), 'policy.yaml')): string {
  writeFileSync(
    file,
    [
      'version: 1',
      'filesystem_policy:',
      `  read_only: [/usr, /lib, /lib64, /bin, /etc, ${dir}]`,
      '  read_write: [/sandbox, /tmp]',
      '',
    ].join('\n'),
    { mode: 0o644 },
  );
  return file;
}

/** A host directory the policy lists read-only, with a file `conf` the sandbox gets its own copy of. */
export function hostTree(): { dir: string; policy: string } {
  const dir = sharedTempDir('carapace-hostdir-');
  chmodSync(dir, 0o755);
  writeFileSync(join(dir, 'conf'), 'the host\n', { mode: 0o644 });
  return { dir, policy: hostTreePolicy(dir) };
}

export interface StarterOptions {
  /** CARAPACE_HOME of the starter. */
  home: string;
  name: string;
  command: string[];
  /** The policy file; the default policy when not given. */
  policy?: string;
  /** Synthesized files (SandboxSpec.files), e.g. a masked copy of a host file. */
  files?: { path: string; content: string }[];
  /** A normal user's start (identities null) rather than root's. */
  rootless?: boolean;
  /** Storage, uid and workspace go with the sandbox (StartOptions ephemeral, removeWorkspace): true. */
  ephemeral?: boolean;
  /** StartOptions of the same names. */
  detached?: boolean;
  control?: boolean;
  logFile?: string;
}

/**
 * Writes a script that starts a sandbox through the library (src/sandbox/sandbox.ts) and, once its
 * agent runs, runs `after`: module code that sees `started` (the StartedSandbox), `checks` (every
 * MaskCheck its guard made so far), `nextCheck(ms)` (the next one, or null after ms) and
 * `execOut(argv)` (an exec's stdout through the control socket). Without `detached` the script
 * exits when `after` is done; detached, nothing of the sandbox's keeps it alive.
 */
export function writeStarter(path: string, o: StarterOptions, after: string): string {
  const dist = (p: string) => JSON.stringify(join(REPO, 'dist', 'src', p));
  const policy = o.policy !== undefined ? JSON.stringify(o.policy) : 'defaultPolicyPath()';
  writeFileSync(
    path,
    `
import { defaultPolicyPath } from ${dist('runtime/one-off-run.js')};
import { settingsFromPolicy } from ${dist('runtime/policy-settings.js')};
import { specFromSettings } from ${dist('runtime/sandbox-spec-from-policy.js')};
import { loadPolicyFile, resolveLimits } from ${dist('policy/index.js')};
import { hostIdentities } from ${dist('sandbox/identity/identity.js')};
import { agentStarted } from ${dist('sandbox/launch/running-sandbox.js')};
import { sandboxPaths, startSandbox } from ${dist('sandbox/sandbox.js')};
import { stateDirs } from ${dist('sandbox/state-dirs.js')};
const dirs = stateDirs({ CARAPACE_HOME: ${JSON.stringify(o.home)} });
const policy = loadPolicyFile(${policy});
const spec = specFromSettings(settingsFromPolicy(policy, resolveLimits(policy)), {
  name: ${JSON.stringify(o.name)}, workspace: sandboxPaths(dirs, ${JSON.stringify(o.name)}).defaultWorkspace,
  env: {}, mounts: [], command: ${JSON.stringify(o.command)},
});
spec.files.push(...${JSON.stringify(o.files ?? [])});
const checks = [];
let heard = () => {};
const nextCheck = (ms) => new Promise((resolve) => {
  const timer = setTimeout(() => resolve(null), ms);
  heard = (c) => { clearTimeout(timer); resolve(c); };
});
const started = await startSandbox(spec, {
  dirs, identities: ${o.rootless ? 'null' : 'hostIdentities()'}, ephemeral: ${o.ephemeral !== false},
  removeWorkspace: ${o.ephemeral !== false}, bestEffortLimits: ${o.rootless === true},
  stdio: ${o.detached ? "'inherit'" : "'pipe'"}, control: ${o.control === true}, detached: ${o.detached === true},
  ${o.logFile !== undefined ? `logFile: ${JSON.stringify(o.logFile)},` : ''}
  onMaskCheck: (c) => { checks.push(c); heard(c); },
});
if (!(await agentStarted(started.process))) process.exit(3);
const execOut = async (argv) => {
  let out = '';
  for await (const chunk of started.control.exec({ argv }).stdout) out += chunk;
  return out;
};
${after}
${o.detached ? '// No exit(): nothing of the sandbox may keep this process alive.' : "started.process.signal('SIGKILL');\nawait started.cleanup();\nprocess.exit(0);"}
`,
    { mode: 0o644 },
  );
  return path;
}

/** Runs a starter script to its end; `onStdout` sees its output as it comes. */
export async function runStarter(
  script: string,
  opts: {
    as?: { uid: number; gid: number };
    env?: NodeJS.ProcessEnv;
    cwd?: string;
    onStdout?: (textSoFar: string) => void;
  } = {},
): Promise<{ stdout: string; stderr: string; code: number | null }> {
  const child = spawn(process.execPath, [script], {
    ...opts.as,
    ...(opts.cwd !== undefined ? { cwd: opts.cwd } : {}),
    ...(opts.env !== undefined ? { env: opts.env } : {}),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    stdout += d;
    opts.onStdout?.(stdout);
  });
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  // 'close': the process has exited and both its pipes are read to their end.
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  return { stdout, stderr, code };
}
