/** Policies, audit reading and run options for end-to-end network tests through `carapace run`. */
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { carapaceAsync, type CliResult } from './cli.js';
import { sharedTempDir } from './sandbox.js';

export const FS_POLICY = `version: 1
filesystem_policy:
  read_only: [/usr, /lib, /lib64, /bin, /etc]
  read_write: [/sandbox, /tmp]
landlock: { compatibility: best_effort }
`;

/** Writes a policy (the standard filesystem part plus `network`, YAML under network_policies). */
export function networkPolicy(network: string, dir = sharedTempDir()): string {
  const path = join(dir, 'policy.yaml');
  writeFileSync(path, `${FS_POLICY}network_policies:\n${network}`);
  return path;
}

export interface AuditLine {
  class_uid: number;
  activity_id: number;
  message: string;
  disposition_id?: number;
  unmapped: Record<string, unknown>;
  finding_info?: { uid: string };
  [k: string]: unknown;
}

export function readAudit(file: string): AuditLine[] {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as AuditLine);
}

/** The proxy options that route `names` to the test's loopback upstreams. */
export function upstreamOptions(names: string[], ports: number[], caFile: string): string[] {
  return [
    ...names.flatMap((n) => ['--resolve', `${n}=127.0.0.1`]),
    ...ports.flatMap((p) => ['--allow-local', `127.0.0.1:${p}`]),
    '--upstream-ca',
    caFile,
  ];
}

/** `carapace …` in the background, resolved with its result (the test's servers keep running). */
export function runCli(
  args: string[],
  opts: { home?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<CliResult> {
  return carapaceAsync(args, opts).result;
}
