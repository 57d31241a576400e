/**
 * The API's caller identity (src/gateway/api/sockets.ts): the kernel decides who is calling, by the
 * permissions of the socket a connection came through. Real sockets, real processes of other uids.
 */
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { openApiDocument } from '../../src/gateway/api/openapi.js';
import { defineRoute } from '../../src/gateway/api/router.js';
import { ApiServer } from '../../src/gateway/api/server.js';
import { GatewaySockets, userSocketPath } from '../../src/gateway/api/sockets.js';
import { holds } from '../helpers/premises.js';

const ALICE = 5301;
const BOB = 5302;
const CAROL = 5303;
const DAVE = 5304;

/** An HTTP request over a Unix socket from a process running as `uid`: [status, body] or the errno. */
function requestAs(
  uid: number,
  socketPath: string,
  path: string,
  init: { method?: string; body?: unknown } = {},
) {
  const script = `
    const http = require('node:http');
    const body = ${JSON.stringify(init.body === undefined ? null : JSON.stringify(init.body))};
    const req = http.request({ socketPath: ${JSON.stringify(socketPath)}, path: ${JSON.stringify(path)}, method: ${JSON.stringify(init.method ?? 'GET')},
      headers: body === null ? {} : { 'content-type': 'application/json', 'x-carapace-uid': '0' } }, (res) => {
      let t = ''; res.on('data', (d) => (t += d)); res.on('end', () => console.log(JSON.stringify([res.statusCode, JSON.parse(t)])));
    });
    req.on('error', (e) => console.log(JSON.stringify([e.code])));
    req.end(body ?? undefined);`;
  // Asynchronously: the server answering is in this very process.
  const child = spawn(process.execPath, ['-e', script], {
    uid,
    gid: uid,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += String(d)));
  return new Promise<[number | string, unknown?]>((resolve) =>
    child.on('close', () => resolve(JSON.parse(out) as [number | string, unknown?])),
  );
}

describe.skipIf(!holds('root'))('gateway sockets: the kernel says who is calling', () => {
  const dir = mkdtempSync(join(tmpdir(), 'carapace-gw-'));
  chmodSync(dir, 0o755);
  const runDir = join(dir, 'run');
  const groupFile = join(dir, 'etc', 'group');
  const passwdFile = join(dir, 'etc', 'passwd');
  const writeAccounts = (members: string, admins: string) => {
    writeFileSync(groupFile, `root:x:0:\ncarapace:x:990:${members}\ncarapace-admin:x:991:${admins}\n`);
  };
  const routes = [
    defineRoute({
      method: 'GET',
      path: '/v1/whoami',
      summary: 'the caller, as the gateway sees it',
      response: z.object({ uid: z.number(), admin: z.boolean() }),
      handler: ({ caller }) => Promise.resolve(caller),
    }),
    defineRoute({
      method: 'POST',
      path: '/v1/echo/{name}',
      summary: 'echo',
      params: z.object({ name: z.string().regex(/^[a-z]+$/) }),
      query: z.object({ n: z.coerce.number().int().optional() }),
      body: z.object({ text: z.string() }),
      handler: ({ caller, params, query, body }) => Promise.resolve({ caller, params, query, body }),
    }),
  ];
  let sockets: GatewaySockets;
  let server: ApiServer;

  beforeAll(async () => {
    mkdirSync(join(dir, 'etc'), { recursive: true });
    writeFileSync(
      passwdFile,
      `root:x:0:0::/root:/bin/sh\nalice:x:${ALICE}:${ALICE}::/:/bin/sh\nbob:x:${BOB}:${BOB}::/:/bin/sh\ncarol:x:${CAROL}:${CAROL}::/:/bin/sh\ndave:x:${DAVE}:990::/:/bin/sh\n`,
    );
    writeAccounts('alice,bob', 'carol');
    server = new ApiServer(routes);
    sockets = new GatewaySockets({
      runDir,
      rootless: false,
      accounts: { groupFile, passwdFile },
      onConnection: (socket, caller) => server.accept(socket, caller),
    });
    await sockets.start();
  });
  afterAll(async () => {
    await sockets.close();
    await server.close();
  });

  it('each user reaches only their own socket, and is who the socket says', async () => {
    expect(await requestAs(0, sockets.mainPath, '/v1/whoami')).toEqual([200, { uid: 0, admin: true }]);
    expect(await requestAs(ALICE, userSocketPath(runDir, ALICE), '/v1/whoami')).toEqual([
      200,
      { uid: ALICE, admin: false },
    ]);
    expect(await requestAs(CAROL, userSocketPath(runDir, CAROL), '/v1/whoami')).toEqual([
      200,
      { uid: CAROL, admin: true },
    ]);
    // Another user's socket, and root's: refused by the kernel.
    expect(await requestAs(ALICE, userSocketPath(runDir, BOB), '/v1/whoami')).toEqual(['EACCES']);
    expect(await requestAs(ALICE, sockets.mainPath, '/v1/whoami')).toEqual(['EACCES']);
    // A user in no group has no socket.
    expect(existsSync(userSocketPath(runDir, 5399))).toBe(false);
    // Dave's primary group is carapace.
    expect(await requestAs(DAVE, userSocketPath(runDir, DAVE), '/v1/whoami')).toEqual([
      200,
      { uid: DAVE, admin: false },
    ]);
  });

  it('a request that claims another uid changes nothing', async () => {
    const [status, body] = await requestAs(ALICE, userSocketPath(runDir, ALICE), '/v1/echo/abc?n=3', {
      method: 'POST',
      body: { text: 'hi', uid: 0 },
    });
    expect(status).toBe(200);
    expect(body).toEqual({
      caller: { uid: ALICE, admin: false },
      params: { name: 'abc' },
      query: { n: 3 },
      body: { text: 'hi' },
    });
  });

  it('answers bad input with one JSON error and a stable code', async () => {
    const sock = userSocketPath(runDir, ALICE);
    expect(await requestAs(ALICE, sock, '/v1/nope')).toEqual([
      404,
      { error: { code: 'NOT_FOUND', message: expect.stringMatching(/no such API path/) as unknown } },
    ]);
    expect((await requestAs(ALICE, sock, '/v1/whoami', { method: 'DELETE' }))[1]).toMatchObject({
      error: { code: 'METHOD_NOT_ALLOWED' },
    });
    const bad = await requestAs(ALICE, sock, '/v1/echo/ABC', { method: 'POST', body: { text: 'x' } });
    expect(bad[0]).toBe(400);
    expect(bad[1]).toMatchObject({
      error: { code: 'INVALID_INPUT', message: expect.stringMatching(/^path\.name: /) as unknown },
    });
    const wrongType = await requestAs(ALICE, sock, '/v1/echo/abc', { method: 'POST', body: { text: 5 } });
    expect(wrongType[1]).toMatchObject({
      error: { code: 'INVALID_INPUT', message: expect.stringMatching(/^body\.text: /) as unknown },
    });
  });

  it('follows the group file: a new member gets a socket, a removed one loses it', async () => {
    writeAccounts('alice', 'carol');
    const bob = userSocketPath(runDir, BOB);
    for (let i = 0; i < 250 && existsSync(bob); i++) await sleep(20);
    expect(existsSync(bob)).toBe(false);
    writeAccounts('alice,bob', 'carol');
    for (let i = 0; i < 250 && !existsSync(bob); i++) await sleep(20);
    expect(await requestAs(BOB, bob, '/v1/whoami')).toEqual([200, { uid: BOB, admin: false }]);
  });

  it('describes itself in an OpenAPI document generated from the same schemas', () => {
    const doc = openApiDocument(routes, '0.0.0') as {
      paths: Record<
        string,
        Record<string, { parameters?: { name: string; in: string }[]; requestBody?: unknown }>
      >;
    };
    expect(Object.keys(doc.paths)).toEqual(['/v1/whoami', '/v1/echo/{name}']);
    expect(doc.paths['/v1/echo/{name}']!.post!.parameters!.map((p) => `${p.in}:${p.name}`)).toEqual([
      'path:name',
      'query:n',
    ]);
    expect(doc.paths['/v1/echo/{name}']!.post!.requestBody).toBeDefined();
  });
});
