/**
 * `carapace run --policy FILE` watches FILE for saves (src/runtime/policy-watch.ts). The run reads
 * the file, starts the sandbox, and only then watches: a save in between made no event, so the
 * sandbox ran the old policy while the file said otherwise, silently (`carapace run`, saving ~1.3 s
 * after the start, reproduced it). The watch reads the file once it watches.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LivePolicy } from '../../src/runtime/policy-apply.js';
import { PolicyWatch } from '../../src/runtime/policy-watch.js';
import {
  compile,
  eventsOf,
  parsed,
  startRig,
  statusOf,
  startUpstreams,
  type Rig,
  type Upstreams,
} from '../proxy/harness.js';

let up: Upstreams;
let rig: Rig;
const dir = mkdtempSync(join(tmpdir(), 'carapace-policy-watch-'));

const policyText = (hosts: string[]) => `version: 1
filesystem_policy: { read_only: [/usr, /etc], read_write: [/sandbox, /tmp] }
network_policies:
  web:
    endpoints:
${hosts.map((h) => `      - { host: ${h}, port: ${up.httpPort}, protocol: rest, access: full }`).join('\n')}
`;

const status = (host: string) => statusOf(rig.socketPath, host, up.httpPort);

/** The sandbox running `text` as the run read it: its generation in the proxy, its LivePolicy. */
function runningOn(text: string): LivePolicy {
  rig.sb.setGeneration(compile(text));
  return new LivePolicy({ sandbox: 'sb1', current: parsed(text), audit: rig.audit, target: rig.sb });
}

beforeAll(async () => {
  up = await startUpstreams();
  rig = await startRig({ up, policy: policyText(['api.example.test']) });
});
afterAll(async () => {
  await rig.close();
  await up.close();
});

describe('watching the policy file of carapace run', () => {
  it('applies a save made before the watch began, at once', async () => {
    const live = runningOn(policyText(['api.example.test']));
    // Saved after the run read the file, before it watched.
    const file = join(dir, 'saved-early.yaml');
    writeFileSync(file, policyText(['api.example.test', 'other.example.test']));
    const warnings: string[] = [];
    const watch = new PolicyWatch({ file, live, warn: (l) => warnings.push(l) });
    try {
      expect(await status('other.example.test')).toBe(200);
      expect(warnings).toEqual([]);
    } finally {
      watch.close();
    }
  });

  it('a file as the run read it: nothing applied, no event, no warning', async () => {
    const started = policyText(['api.example.test']);
    const live = runningOn(started);
    const generation = rig.sb.generation;
    const events = eventsOf(rig.audit, 5019).length;
    const file = join(dir, 'unchanged.yaml');
    writeFileSync(file, started);
    const warnings: string[] = [];
    const watch = new PolicyWatch({ file, live, warn: (l) => warnings.push(l) });
    watch.close();
    expect(rig.sb.generation).toBe(generation);
    expect(eventsOf(rig.audit, 5019)).toHaveLength(events);
    expect(warnings).toEqual([]);
  });
});
