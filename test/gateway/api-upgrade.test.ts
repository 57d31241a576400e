/**
 * An upgraded connection's caller may hang up at any moment, and a write to its socket then fails
 * (EPIPE, or a write after the end): the failure must reach the route as the socket's close, never
 * as an unheard 'error' that ends the gateway (a `GET /v1/runs` closed right after its 101 did).
 */
import { connect, createServer, type Server } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defineRoute } from '../../src/gateway/api/router.js';
import { ApiServer, type UpgradedStream } from '../../src/gateway/api/server.js';

describe('an upgraded connection whose caller hung up', () => {
  const dir = mkdtempSync(join(tmpdir(), 'carapace-upgrade-'));
  const path = join(dir, 'api.sock');
  let listener: Server;
  let wrote: Promise<void>;
  let tellWrote: () => void;

  beforeAll(async () => {
    wrote = new Promise((resolve) => (tellWrote = resolve));
    const api = new ApiServer([
      defineRoute({
        method: 'GET',
        path: '/v1/late',
        summary: 'answers only once its caller has gone',
        stream: 'upgrade',
        handler: async ({ body }) => {
          const { socket } = body as UpgradedStream;
          socket.resume();
          await new Promise((resolve) => socket.once('end', resolve));
          socket.write('HTTP/1.1 101 Switching Protocols\r\n\r\n');
          await new Promise((resolve) => socket.once('close', resolve));
          tellWrote();
          return { streamed: true };
        },
      }),
      defineRoute({
        method: 'GET',
        path: '/v1/ping',
        summary: 'pong',
        handler: () => Promise.resolve({ pong: true }),
      }),
    ]);
    listener = createServer((socket) => api.accept(socket, { uid: 0, admin: true }));
    await new Promise<void>((resolve) => listener.listen(path, resolve));
  });
  afterAll(() => {
    listener?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const send = (text: string, leave: boolean) =>
    new Promise<string>((resolve) => {
      const socket = connect(path);
      let got = '';
      socket.on('data', (d: Buffer) => (got += String(d)));
      socket.on('close', () => resolve(got));
      socket.write(text, () => {
        if (leave) socket.end();
      });
    });

  it('reaches the route as a close, and the server answers the next caller', async () => {
    await send('GET /v1/late HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\n', true);
    await wrote;
    const answer = await send('GET /v1/ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n', false);
    expect(answer).toMatch(/^HTTP\/1\.1 200 [^]*\{"pong":true\}$/);
  });
});
