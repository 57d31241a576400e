/**
 * Binary identity cannot be borrowed (issue 10, class 6), from inside a real sandbox.
 *
 * The attack: a process that is not allowed forks a child first, then execs the allowed program
 * (python here, which waits for the child); the child — never a descendant of that exec — runs a
 * copy of curl and connects. Seen from the host at that moment, the copy's parent chain holds the
 * allowed python, exactly as for a child python really started. Before the fix every ancestor
 * counted, so the copy passed as python's child. Now ancestors count only for a binary marked
 * `descendants: true` (docs/policy.md): by default the borrowed identity is refused, and so is a
 * genuine child. With the mark, a genuine child passes — and so does the borrowed identity, which
 * nothing a rootless host can read tells apart (a known gap, pinned here, docs/security.md).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startUpstreams, type Upstreams } from '../proxy/harness.js';
import { binaryOf, reasonOf, refusals, runInside, type Outcome } from './proxy-sandbox.js';

let up: Upstreams;
beforeAll(async () => {
  up = await startUpstreams();
});
afterAll(() => up.close());

const PYTHON = '/usr/bin/python3.11';

/** api.test for python only, with or without its descendants. */
const network = (descendants: boolean): string => `  api:
    name: api
    endpoints:
      - { host: api.test, port: ${up.httpPort}, access: full }
    binaries: [ { path: ${PYTHON}${descendants ? ', descendants: true' : ''} } ]
`;

const inside = (descendants: boolean, script: string): Promise<Outcome> =>
  runInside({ network: network(descendants), up, names: ['api.test'] }, ['sh', '-c', script]);

const curl = (path: string): string =>
  `/tmp/curl -s -p -o /dev/null -w '%{http_connect}\\n' http://api.test:${up.httpPort}${path}`;

/**
 * The borrowed identity. The shell forks a subshell, then execs python, which waits for it; the
 * subshell waits until its parent ($$, the shell that forked it) IS python (an event, not a delay), then runs the curl copy.
 */
const borrowed = (): string =>
  [
    'cp /usr/bin/curl /tmp/curl',
    `( while [ "$(readlink /proc/$$/exe)" != ${PYTHON} ]; do :; done; ${curl('/borrowed')} ) & exec ${PYTHON} -c 'import os; os.wait()'`,
  ].join('; ');

/** A child python really starts after it runs. */
const genuine = (): string =>
  [
    'cp /usr/bin/curl /tmp/curl',
    `${PYTHON} -c 'import subprocess, sys; subprocess.run(sys.argv[1:])' /tmp/curl -s -p -o /dev/null -w '%{http_connect}\\n' http://api.test:${up.httpPort}/genuine`,
  ].join('; ');

const allowed = (o: Outcome) => o.audit.filter((e) => e.class_uid === 4001 && e.disposition_id === 1);

describe('exec lineage', () => {
  it('a process forked before its parent exec’d the allowed python does not pass as python’s child (403, audited)', async () => {
    const o = await inside(false, borrowed());
    expect(o.stdout.trim()).toBe('403');
    const [refused] = refusals(o.audit, 4001);
    expect(binaryOf(refused)).toBe('/tmp/curl');
    expect(reasonOf(refused)).toContain(
      `it runs under "${PYTHON}", but the programs a binary starts count only`,
    );
    expect(up.seen.some((s) => s.url === '/borrowed')).toBe(false);
  });

  it('by default a genuine child is not python either; python itself is', async () => {
    const o = await inside(
      false,
      `${genuine()}; ${PYTHON} -c "import urllib.request as u; print(u.urlopen('http://api.test:${up.httpPort}/itself').status)"`,
    );
    expect(o.stdout.trim().split('\n')).toEqual(['403', '200']);
    expect(allowed(o).map(binaryOf)).toEqual([PYTHON]);
  });

  it('descendants: true admits a genuine child, as its child', async () => {
    const o = await inside(true, genuine());
    expect(o.stdout.trim()).toBe('200');
    const [child] = allowed(o);
    expect(binaryOf(child)).toBe('/tmp/curl');
    expect(reasonOf(child)).toMatch(/a child of "\/usr\/bin\/python3\.11"/);
  });

  // Known gap (docs/security.md): with descendants: true the parent chain is all the proxy can
  // see, and a process forked before the exec has the same chain as one forked after it.
  it('known gap: with descendants: true, a process forked before the exec still passes', async () => {
    const o = await inside(true, borrowed());
    expect(o.stdout.trim()).toBe('200');
    expect(allowed(o).map(binaryOf)).toEqual(['/tmp/curl']);
  });
});
