/**
 * The gateway's joined connections (exec streams, port forwards) end when either side does, and
 * the client's side is never left open: the leak the create/exec/delete cycles found was a client
 * whose last bytes arrived after the inside had closed.
 */
import { once } from 'node:events';
import { createServer, connect, Socket, type Server } from 'node:net';
import { join } from 'node:path';
import { Duplex } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { splice } from '../../src/gateway/sandbox-io/splice.js';
import { freshHome } from '../helpers/cli.js';

const servers: Server[] = [];
afterEach(() => {
  for (const s of servers.splice(0)) s.close();
});

async function listen(path: string, onConnection: (s: Socket) => void): Promise<void> {
  const server = createServer(onConnection);
  servers.push(server);
  server.listen(path);
  await once(server, 'listening');
}

/**
 * An inside that writes `bye` and closes, and a gateway that splices each client to it. Resolves
 * with the client's socket and the gateway's side of it, once the gateway's inside has closed.
 */
async function joined(graceMs?: number) {
  const dir = freshHome();
  const insidePath = join(dir, 'inside.sock');
  const gatewayPath = join(dir, 'gateway.sock');
  await listen(insidePath, (s) => s.end('bye'));
  let gatewaySideClosed!: Promise<unknown>;
  const insideClosed = new Promise<void>((resolve) =>
    listen(gatewayPath, (s) => {
      gatewaySideClosed = once(s, 'close');
      const inside = connect(insidePath);
      inside.once('close', () => resolve());
      splice(s, inside, graceMs);
    }),
  );
  await new Promise((r) => setImmediate(r));
  // Half-open, as an exec's client is in effect: it reads the EXIT frame before it ends its side.
  const client = connect({ path: gatewayPath, allowHalfOpen: true });
  client.on('error', () => {});
  let got = '';
  client.on('data', (d: Buffer) => (got += String(d)));
  await insideClosed;
  return { client, gatewaySideClosed, received: () => got };
}

describe('splice', () => {
  it('sees the client close when its last bytes came after the inside closed', async () => {
    const { client, gatewaySideClosed, received } = await joined();
    // What an exec's client does as the process exits: a last frame, then its end.
    client.end('late');
    await gatewaySideClosed;
    expect(received()).toBe('bye');
  });

  it('closes a client that keeps its side open after it was sent everything', async () => {
    const { client, gatewaySideClosed, received } = await joined(100);
    client.write('still here'); // and never ends
    await gatewaySideClosed;
    expect(received()).toBe('bye');
    client.destroy();
  });

  it('ends the inside when the client goes', async () => {
    const dir = freshHome();
    const insidePath = join(dir, 'inside.sock');
    const gatewayPath = join(dir, 'gateway.sock');
    const insideGone = new Promise<void>((resolve) =>
      listen(insidePath, (s) => {
        s.on('error', () => {});
        s.once('close', () => resolve());
      }),
    );
    await new Promise((r) => setImmediate(r));
    await listen(gatewayPath, (s) => splice(s, connect(insidePath)));
    const client = connect(gatewayPath);
    await once(client, 'connect');
    client.destroy();
    await insideGone;
  });

  it('closes a client that stops reading what the inside left for it', async () => {
    // Streams in memory: a client that never takes a byte, and an inside that writes its last
    // frame and goes. The client's side cannot finish; it must still not be kept.
    const stalled = new Duplex({ read() {}, write() {} });
    const inside = new Duplex({
      read() {},
      write(_chunk, _enc, done) {
        done();
      },
    });
    splice(stalled, inside, 100);
    inside.push('EXIT');
    inside.push(null);
    await new Promise((r) => setImmediate(r));
    inside.destroy();
    await once(stalled, 'close');
  });

  it('ends the inside when the client was gone before the inside was reached', async () => {
    const dir = freshHome();
    const insidePath = join(dir, 'inside.sock');
    const insideGone = new Promise<void>((resolve) =>
      listen(insidePath, (s) => {
        s.on('error', () => {});
        s.once('close', () => resolve());
      }),
    );
    await new Promise((r) => setImmediate(r));
    const client = new Socket();
    client.destroy(); // a forward's client that connected and left meanwhile
    await once(client, 'close');
    splice(client, connect(insidePath));
    await insideGone;
  });
});
