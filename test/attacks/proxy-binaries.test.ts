/**
 * Passing for a program the policy allows, from inside a real sandbox. The proxy names the caller
 * by `/proc/<pid>/exe` of the process holding the connection (never argv) and counts its ancestors
 * for binaries marked `descendants: true` (docs/policy.md, "Which programs an entry admits";
 * proxy-lineage.test.ts has what that mark cannot tell apart). Attacks: a copy of an allowed
 * binary at another path, a forged argv[0], an interpreter that is not listed, a socket shared
 * with an allowed child; and what is documented rather than refused: an allowed interpreter marked
 * `descendants: true` lends its grant to what it starts, and code loaded into an allowed binary
 * (LD_PRELOAD) runs as that binary (a known gap, docs/security.md).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startUpstreams, type Upstreams } from '../proxy/harness.js';
import { binaryOf, findings, python, reasonOf, refusals, runInside, type Outcome } from './proxy-sandbox.js';

let up: Upstreams;
beforeAll(async () => {
  up = await startUpstreams();
});
afterAll(() => up.close());

/** api.test for the listed binaries only (`PATH+` also admits what PATH starts: descendants: true). */
function network(binaries: string[]): string {
  const entry = (b: string): string =>
    b.endsWith('+') ? `{ path: ${b.slice(0, -1)}, descendants: true }` : `{ path: ${b} }`;
  return `  api:
    name: api
    endpoints:
      - { host: api.test, port: ${up.httpPort}, access: full }
    binaries: [ ${binaries.map(entry).join(', ')} ]
`;
}

const inside = (binaries: string[], command: string[]): Promise<Outcome> =>
  runInside({ network: network(binaries), up, names: ['api.test'] }, command);

/** curl (`bin`) through a CONNECT tunnel (-p), printing the proxy's answer to the CONNECT. */
const curl = (bin: string, path: string) =>
  `${bin} -s -p -o /dev/null -w '%{http_connect}\\n' http://api.test:${up.httpPort}${path}`;
const allowed = (o: Outcome) => o.audit.filter((e) => e.class_uid === 4001 && e.disposition_id === 1);

describe('binary identity', () => {
  it('a copy of the allowed /usr/bin/curl at /tmp/curl or /sandbox/curl is refused; curl itself and a symlink to it pass', async () => {
    const o = await inside(
      ['/usr/bin/curl'],
      [
        'sh',
        '-c',
        [
          'cp /usr/bin/curl /tmp/curl && cp /usr/bin/curl /sandbox/curl && ln -s /usr/bin/curl /tmp/curl-link',
          curl('/tmp/curl', '/copy-tmp'),
          curl('/sandbox/curl', '/copy-sandbox'),
          curl('/usr/bin/curl', '/real'),
          curl('/tmp/curl-link', '/symlink'),
        ].join('; '),
      ],
    );
    expect(o.stdout.trim().split('\n')).toEqual(['403', '403', '200', '200']);
    const refused = refusals(o.audit, 4001);
    expect(refused.map(binaryOf)).toEqual(['/tmp/curl', '/sandbox/curl']);
    expect(reasonOf(refused[0])).toMatch(/allowed only for other programs, not "\/tmp\/curl"/);
    expect(allowed(o).map(binaryOf)).toEqual(['/usr/bin/curl', '/usr/bin/curl']);
    expect(up.seen.some((s) => s.url.startsWith('/copy-'))).toBe(false);
  });

  it('a forged argv[0] ("/usr/bin/curl") on the copy changes nothing: the kernel names the executable', async () => {
    const o = await inside(
      ['/usr/bin/curl'],
      [
        'sh',
        '-c',
        `cp /usr/bin/curl /tmp/curl && python3 -c 'import os, sys; os.execv("/tmp/curl", ["/usr/bin/curl"] + sys.argv[1:])' -s -p -o /dev/null -w '%{http_connect}\\n' http://api.test:${up.httpPort}/argv0`,
      ],
    );
    expect(o.stdout.trim()).toBe('403');
    expect(refusals(o.audit, 4001).map(binaryOf)).toEqual(['/tmp/curl']);
  });

  it('python is not curl: its own socket is refused; the curl it starts is curl', async () => {
    const o = await inside(
      ['/usr/bin/curl'],
      python(
        [
          `exchange([${JSON.stringify(`GET http://api.test:${up.httpPort}/from-python HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n`)}], 'python')`,
          'import subprocess',
          `subprocess.run(['sh', '-c', ${JSON.stringify(curl('curl', '/python-child'))}])`,
        ].join('\n'),
      ),
    );
    expect(o.results[0]?.responses.map((r) => r.status)).toEqual([403]);
    expect(o.stdout).toMatch(/^200$/m);
    expect(refusals(o.audit, 4001).map(binaryOf)).toEqual(['/usr/bin/python3.11']);
  });

  it('a socket shared by python and the curl it started is refused as ambiguous (403 + finding)', async () => {
    const o = await inside(
      ['/usr/bin/curl'],
      python(`
import subprocess
s = socket.socket()
# curl holds the same socket (inherited) and blocks reading its stdin; python uses the socket.
child = subprocess.Popen(['/usr/bin/curl', '-s', '-o', '/dev/null', 'file:///dev/stdin'],
                         stdin=subprocess.PIPE, pass_fds=[s.fileno()])
s.connect(('127.0.0.1', 3128))
converse(s, [${JSON.stringify(`GET http://api.test:${up.httpPort}/shared HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n`)}], 'shared')
child.stdin.close()
child.wait()
`),
    );
    expect(o.results[0]?.responses.map((r) => r.status)).toEqual([403]);
    expect(findings(o.audit)).toEqual(['ambiguous-identity']);
    expect(reasonOf(refusals(o.audit, 4001)[0])).toMatch(
      /several processes with different executables \(.*python3\.11.*curl|several processes with different executables \(.*curl.*python3\.11/,
    );
    expect(up.seen.some((s) => s.url === '/shared')).toBe(false);
  });
});

describe('documented behaviour: what an allowed program starts, and what runs inside it', () => {
  it('descendants: true: under an allowed python, a curl copy is allowed as its child; outside python it is not', async () => {
    const o = await inside(
      ['/usr/bin/python3.11+'],
      [
        'sh',
        '-c',
        [
          'cp /usr/bin/curl /tmp/curl',
          curl('/tmp/curl', '/no-ancestor'),
          `python3 -c 'import subprocess, sys; subprocess.run(sys.argv[1:])' /tmp/curl -s -p -o /dev/null -w '%{http_connect}\\n' http://api.test:${up.httpPort}/via-python`,
        ].join('; '),
      ],
    );
    expect(o.stdout.trim().split('\n')).toEqual(['403', '200']);
    const [viaPython] = allowed(o);
    expect(binaryOf(viaPython)).toBe('/tmp/curl');
    expect(reasonOf(viaPython)).toMatch(/a child of "\/usr\/bin\/python3\.11"/);
  });

  // Known gap (docs/security.md): a binary rule names the executable file, not the code running in
  // it. An agent that may run an allowed binary can load its own code into it; the connection is
  // then that binary's. This pins down the current behaviour.
  it('known gap: a library the agent compiles and LD_PRELOADs into /usr/bin/curl connects as curl', async () => {
    const library = String.raw`
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sys/socket.h>
__attribute__((constructor)) static void injected(void) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(3128) };
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  if (connect(s, (struct sockaddr *)&a, sizeof a) != 0) _exit(1);
  const char *req = "GET http://api.test:PORT/injected HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n";
  if (write(s, req, strlen(req)) < 0) _exit(1);
  char buf[16] = {0};
  if (read(s, buf, 12) < 0) _exit(1);
  printf("injected: %s\n", buf);
  fflush(stdout);
  _exit(0);
}
`.replace('PORT', String(up.httpPort));
    const o = await inside(
      ['/usr/bin/curl'],
      [
        'sh',
        '-c',
        'printf "%s" "$0" > /tmp/inject.c && cc -shared -fPIC -o /tmp/inject.so /tmp/inject.c && LD_PRELOAD=/tmp/inject.so /usr/bin/curl --version',
        library,
      ],
    );
    expect(o.stderr).toBe('');
    expect(o.stdout.trim()).toBe('injected: HTTP/1.1 200');
    expect(allowed(o).map(binaryOf)).toEqual(['/usr/bin/curl']);
    expect(up.seen.some((s) => s.url === '/injected')).toBe(true);
  });
});
